"""write_card and write_report: the model card beside the weights, the report beside the run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..genome import GENES, V3_GENES
from ..io.files import write_bytes_atomic, write_text_atomic
from ..records import file_names
from .blocks import Picture, Section, Table
from .html import render_html
from .markdown import front_matter, render_markdown
from .records import RunRecords, read_records
from .sections import card_sections


def write_card(child_dir: str | Path, run_dir: str | Path | None = None,
               hub_ids: dict[str, str] | None = None) -> Path:
    """Write CHILD_DIR/README.md (pictures copied beside it); with a run folder, also
    RUN_DIR/report.html. Returns the card's path. Missing records leave sections out.
    `hub_ids` names parents on the Hub ({"father": "org/name"}) for `base_model`."""
    rec = read_records(child_dir, run_dir, hub_ids)
    with tempfile.TemporaryDirectory(prefix="darwin-card-") as scratch:
        sections = card_sections(rec, Path(scratch))
        for picture in _pictures(sections):
            write_bytes_atomic(rec.child_dir / picture.name, picture.source.read_bytes())
        card = rec.child_dir / file_names.CARD
        write_text_atomic(card, render_markdown(front_matter(rec), sections))
        if rec.run_dir is not None:
            _write_report(rec, sections)
    return card


def write_report(run_dir: str | Path, child_dir: str | Path | None = None) -> Path:
    """Write RUN_DIR/report.html alone; the child defaults to the run's `child` folder."""
    run_dir = Path(run_dir)
    if child_dir is None:
        child_dir = run_dir / file_names.CHILD_DIR
    rec = read_records(child_dir, run_dir)
    with tempfile.TemporaryDirectory(prefix="darwin-report-") as scratch:
        return _write_report(rec, card_sections(rec, Path(scratch)))


def _write_report(rec: RunRecords, sections: list[Section]) -> Path:
    """The card's sections, the evolution plot after the evolution result (or before
    reproducibility), the trial table last (it is long)."""
    sections = list(sections)
    plot = _evolution_plot(rec)
    if plot is not None:
        anchors = [s.anchor for s in sections]
        at = (anchors.index("evolution") + 1 if "evolution" in anchors else
              anchors.index("reproducibility") if "reproducibility" in anchors else
              len(sections))
        sections.insert(at, plot)
    trials = _trials(rec)
    if trials is not None:
        sections.append(trials)
    path = rec.run_dir / file_names.REPORT
    sections[0] = Section(sections[0].title, [f"Run folder `{rec.run_dir}`; the model card "
                                              f"is `{rec.child_dir / file_names.CARD}`.",
                                              *sections[0].blocks], sections[0].anchor)
    write_text_atomic(path, render_html(f"Darwin run report: {rec.name}", sections))
    return path


def _evolution_plot(rec: RunRecords) -> Section | None:
    path = rec.pictures.get("evolution")
    if path is None:
        return None
    caption = "Fitness over the search (Phase 1 proxy, Phase 2 real) and the best genome"
    return Section("Evolution plot", [Picture(path, file_names.EVOLUTION_PICTURE, caption)],
                   anchor="evolution-plot")


def _trials(rec: RunRecords) -> Section | None:
    """Every trial of the search, one row each; click a column header to sort."""
    trials = rec.trials
    if not trials:
        return None
    tasks = sorted({k for t in trials for k in (t.scores or {})})
    metrics = {task: _metric(rec, task) for task in tasks}
    extra = [k for k in ("duplicate_of",) if any(getattr(t, k) is not None for t in trials)]
    genes = [g for g in (*GENES, *V3_GENES) if any(g in t.genome for t in trials)]
    headers = (["number", "phase", "source", "fitness", "proxy_fitness"]
               + [f"{task} {metrics[task]}" for task in tasks]
               + ["seconds"] + extra + ["finished", "genome_hash"] + genes)
    rows = []
    for t in trials:
        scores = t.scores or {}
        rows.append([_cell(getattr(t, k)) for k in ("number", "phase", "source", "fitness",
                                                    "proxy_fitness")]
                    + [_cell(_score(scores.get(task), metrics[task])) for task in tasks]
                    + [_cell(_seconds(t.seconds))]
                    + [_cell(getattr(t, k)) for k in [*extra, "finished", "genome_hash"]]
                    + [_cell(t.genome.get(g)) for g in genes])
    text = f"All {len(trials)} trials of the search. Click a column header to sort."
    best = rec.best.trial
    marked = tuple(i for i, t in enumerate(trials) if best is not None and t.number == best)
    if marked:
        text += f" The trial the child comes from ({best}) is highlighted."
    return Section("Trials", [text, Table(headers, rows, sortable=True, marked=marked)],
                   anchor="trials")


def _metric(rec: RunRecords, task: str) -> str:
    """A task's metric, as the holdout table names it ("acc" when it does not)."""
    spec = rec.holdout.tasks.get(task)
    return spec.metric if spec is not None and spec.metric else "acc"


def _seconds(value: dict | None) -> float | None:
    """A trial's seconds: the total of its parts ({merge_seconds, eval_seconds})."""
    return None if value is None else float(sum(value.values()))


def _score(result: dict | None, metric: str):
    """A task's score in a trial: the metric of its result (None when not scored)."""
    return None if result is None else result.get(metric)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value + 0.0:.4f}"  # + 0.0: no "-0.0000"
    return str(value)


def _pictures(sections: list[Section]) -> list[Picture]:
    return [b for s in sections for b in s.blocks if isinstance(b, Picture)]


__all__ = ["write_card", "write_report"]
