"""The baselines' tables of a finished run, as rows of text from its summary record: one
content for the terminal (evolve/summary_tables.py), RESULTS.md (demo/run.py) and the card
and report (card/sections.py), so that they cannot disagree.

* `baseline_rows`: every baseline of the holdout table: what it is, why it is there (fixed,
  or a tuned recipe's best or best healthy point), its search-split fitness, health verdict,
  guards on the holdout, holdout fitness and the child's paired difference with it;
* `headline`: the best tuned baseline and the best healthy one, against the child;
* `grid_rows`: every tuned point's search fitness, per recipe, density by lambda.
"""

from __future__ import annotations

from pathlib import Path

from .eval.paired import p_text
from .records import METHOD_WORDS, SummaryRecord

BASELINE_HEADERS = ["baseline", "recipe", "why here", "search fitness", "health",
                    "guards (holdout)", "holdout fitness", "child minus it (fitness)"]
REFERENCES = ("child", "father", "mother", "base")


def score_cell(result: dict) -> str:
    """One task's primary score in a table: `0.730 ± 0.031`."""
    metric = result["metric"]
    stderr = result.get(f"{metric}_stderr")
    return f"{result[metric]:.3f}" + ("" if stderr is None else f" ± {stderr:.3f}")


def task_labels(tasks) -> dict[str, str]:
    """Column titles of the tables: a task file named by its path shows its file name only,
    unless another task of the table has the same file name."""
    tasks = list(tasks)
    names = [Path(t).name if t.endswith(".jsonl") else t for t in tasks]
    return {t: name if names.count(name) == 1 else t
            for t, name in zip(tasks, names, strict=True)}


def search_split_line(fitness: dict[str, float], limit: int | None) -> str:
    """The search split's fitness of each model and the child's lead over it, in a line."""
    child = fitness["child"]
    others = ", ".join(f"{name} {value:.4f} ({child - value:+.4f})"
                       for name, value in fitness.items() if name != "child")
    return (f"Search split ({limit or 'all'} items per fitness task, where the child was "
            f"chosen: its lead there is biased upward), fitness: child {child:.4f}; "
            f"{others}.")


def baseline_names(summary: SummaryRecord) -> list[str]:
    """The baselines of the holdout table, in its order."""
    models = summary.holdout.models if summary.holdout else {}
    return [name for name in models if name not in REFERENCES]


def recipe_words(summary: SummaryRecord, name: str) -> str:
    """'TIES, density 0.5, lambda 1.25'; a genome baseline: 'darwin genome: every ratio 0.5'."""
    search = summary.baseline_search
    if search is not None and name in search.recipes:
        return search.recipes[name].words()
    genome = (summary.baselines or {}).get(name)
    if not genome:
        return "as named by the run"
    ratios = {v for k, v in genome.items() if k.endswith("_ratio")}
    ratio = f"every ratio {ratios.pop():g}" if len(ratios) == 1 else "ratios vary"
    weight = genome.get("merge_method_weight")
    method = {1.0: "DARE-TIES", 0.0: "linear"}.get(weight, f"blend {weight}")
    density = "" if weight == 0.0 else f", density {genome.get('density_a'):g}"
    return f"darwin genome: {method}, {ratio}{density}"


def roles(summary: SummaryRecord, name: str) -> str:
    """Why a baseline is in the table: fixed, or which tuned recipe's best point it is."""
    search = summary.baseline_search
    if search is None:
        return "fixed"
    words = []
    for family, chosen in search.chosen.items():
        if chosen == name:
            words.append(f"best {METHOD_WORDS[family]}")
    for family, healthy in search.healthy.items():
        if healthy == name and search.chosen.get(family) != name:
            words.append(f"best healthy {METHOD_WORDS[family]}")
    if name == search.best_tuned:
        words.append("BEST TUNED")
    if name == search.best_healthy_tuned:
        words.append("BEST HEALTHY TUNED")
    return ", ".join(words) or "fixed"


def guards_on_holdout(summary: SummaryRecord, name: str) -> str:
    """'kept' or 'broken: arc_easy' against the child's floors (the same reference's holdout
    score less the tolerance); '-' without guards."""
    if not summary.guard:
        return "-"
    row = summary.holdout.models[name]
    broken = []
    for task, verdict in summary.guard.items():
        result = row[task]
        score = float(result[result["metric"]])
        score = score if result["higher_is_better"] else -score
        if score < verdict.floor:
            broken.append(task)
    return "kept" if not broken else "broken: " + ", ".join(broken)


def difference_cell(comparison: dict) -> str:
    """`+0.033 ± 0.012 (p 0.008)`: the child's paired difference with a model."""
    stderr = comparison["stderr"]
    return (f"{comparison['diff']:+.3f}" + ("" if stderr is None else f" ± {stderr:.3f}")
            + f" (p {p_text(comparison['p'], comparison.get('test'))})")


def baseline_rows(summary: SummaryRecord) -> list[list[str]]:
    """One row per baseline of the holdout table (BASELINE_HEADERS)."""
    holdout, search = summary.holdout, summary.baseline_search
    rows = []
    for name in baseline_names(summary):
        split = (summary.search_split or {}).get(name)
        health = None if search is None else search.health.get(name)
        comparison = holdout.comparisons.get(name, {}).get("fitness")
        rows.append([name, recipe_words(summary, name), roles(summary, name),
                     "-" if split is None else f"{split:.4f}", health or "-",
                     guards_on_holdout(summary, name),
                     f"{holdout.models[name]['fitness']:.4f}",
                     "-" if comparison is None else difference_cell(comparison)])
    return rows


def headline(summary: SummaryRecord) -> list[str]:
    """The child against the best tuned baseline and the best healthy one, in sentences
    (empty without tuned baselines)."""
    search = summary.baseline_search
    if search is None or search.mode != "tuned":
        return []
    lines = []
    for label, name in (("best tuned baseline", search.best_tuned),
                        ("best healthy tuned baseline", search.best_healthy_tuned)):
        if name is None:
            lines.append(f"No {label}: none of the tuned recipes' best points "
                         + ("was fully scored." if label == "best tuned baseline" else
                            "passed the health check."))
            continue
        fitness = summary.holdout.models[name]["fitness"]
        comparison = summary.holdout.comparisons[name]["fitness"]
        lines.append(f"The {label} is {name} ({recipe_words(summary, name)}; tuned on the "
                     f"search split): holdout fitness {fitness:.4f}; child minus it "
                     f"{difference_cell(comparison)}.")
    return lines


def grid_rows(summary: SummaryRecord) -> tuple[list[str], list[list[str]]]:
    """The tuned points' search fitness: one row per recipe and density, one column per
    lambda; a value racing stopped early is its estimate, marked `~`; a fully scored point
    whose guards were not scored (it could not be chosen) is marked `*` (headers, rows)."""
    search = summary.baseline_search
    if search is None or not search.points:
        return [], []
    scales = sorted({p.scale for p in search.points})
    cells: dict[tuple[str, float], dict[float, str]] = {}
    for p in search.points:
        mark = "" if p.fully_scored else "~"
        broken = " (guard)" if p.guards_kept is False else \
            "*" if p.fully_scored and p.guards_scored is False else ""
        cells.setdefault((p.family, p.density), {})[p.scale] = \
            f"{mark}{p.search_fitness:.3f}{broken}"
    headers = ["recipe", "density"] + [f"lambda {s:g}" for s in scales]
    rows = [[METHOD_WORDS.get(family, family), "-" if family == "task_arithmetic" else f"{d:g}"]
            + [row.get(s, "") for s in scales]
            for (family, d), row in cells.items()]
    return headers, rows
