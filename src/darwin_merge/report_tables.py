"""A finished run's result tables, as one content (`card/blocks.py` blocks) from its summary
record, for the terminal (evolve/summary_tables.py), RESULTS.md (demo/run.py) and the card
and report (card/sections.py): one content, so that they cannot disagree.

* `holdout_blocks`: every model's holdout scores and fitness (and search-split fitness),
  the child's paired differences with each, the guards' verdicts;
* `baseline_blocks`: the best tuned baseline and the best healthy one against the child,
  every baseline (what it is, why it is there, its search fitness, health verdict, guards on
  the holdout, holdout fitness and the child's paired difference with it), and the tuned
  points' grid (search fitness per recipe, density by lambda).
"""

from __future__ import annotations

from .card.blocks import Block, Bullets, Table
from .eval.paired import p_text
from .eval.results import TaskScore
from .eval.tasks import task_label
from .records import METHOD_WORDS, SummaryRecord

BASELINE_HEADERS = ["baseline", "recipe", "why here", "search fitness", "health",
                    "guards (holdout)", "holdout fitness", "child minus it (fitness)"]
REFERENCES = ("child", "father", "mother", "base")


def score_cell(row: dict | None) -> str:
    """One task's primary score in a table: `0.730 ± 0.031` ('-' when not scored)."""
    if row is None:
        return "-"
    result = TaskScore.from_row(row)
    if result.metrics[result.metric] is None:
        return "-"
    stderr = result.primary_stderr
    return f"{result.primary:.3f}" + ("" if stderr is None else f" ± {stderr:.3f}")


def task_labels(tasks) -> dict[str, str]:
    """Column titles of the tables: a task file named by its path shows its stem
    (eval/tasks.task_label), unless another task of the table has the same (a record of a
    run from before such runs were refused)."""
    tasks = list(tasks)
    names = [task_label(t) for t in tasks]
    return {t: name if names.count(name) == 1 else t
            for t, name in zip(tasks, names, strict=True)}


def baseline_names(summary: SummaryRecord) -> list[str]:
    """The baselines of the holdout table, in its order."""
    return [name for name in summary.holdout.models if name not in REFERENCES]


def recipe_words(summary: SummaryRecord, name: str) -> str:
    """'TIES, density 0.5, lambda 1.25'; a genome baseline: 'darwin genome: every ratio 0.5'."""
    search = summary.baseline_search
    if name in search.recipes:
        return search.recipes[name].words()
    genome = summary.baselines.get(name)
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
        if TaskScore.from_row(row[task]).signed_primary < verdict.floor:
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
        split = summary.search_split.get(name)
        health = search.health.get(name)
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
    if search.mode != "tuned":
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
    if not search.points:
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


def holdout_blocks(summary: SummaryRecord) -> list[Block]:
    """The holdout table (a row per model: each task's primary score ± its standard error,
    the fitness on these items and on the search split), the child's paired differences
    and the guards' verdicts (empty when no model was scored; a task nobody was scored on
    has no column)."""
    holdout, search = summary.holdout, summary.search_split
    models = holdout.models
    tasks = [t for t in holdout.tasks if any(score_cell(row.get(t)) != "-"
                                             for row in models.values())] if models else []
    if not tasks and all(row.get("fitness") is None for row in models.values()):
        return []  # nobody was scored: no table of dashes
    labels = task_labels(tasks)
    headers = ["model", *(f"{labels[t]} ({_task_words(holdout.tasks[t])})" for t in tasks),
               "fitness (holdout)", f"fitness (search split, {summary.limit or 'all'} items "
               "per task)"]
    rows = [[name, *(score_cell(row.get(t)) for t in tasks), _fitness_cell(row.get("fitness")),
             _fitness_cell(search.get(name))] for name, row in holdout.models.items()]
    blocks: list[Block] = [
        "Held-out items (never seen by the search); every model scored on the same items: "
        "each task's primary metric ± its standard error, and the fitness (the weighted "
        "fitness tasks). The last column is the fitness on the search split, where the "
        "child was chosen: its lead there is biased upward.", Table(headers, rows)]
    if holdout.comparisons:
        blocks += ["The child minus each model on the same holdout items (paired difference "
                   "± its standard error; p: exact McNemar per task, paired bootstrap for the "
                   "fitness):",
                   Table(["against", *(labels[t] for t in tasks), "fitness"],
                         [[name, *(difference_cell(c[t]) if t in c else "-"
                                   for t in (*tasks, "fitness"))]
                          for name, c in holdout.comparisons.items()])]
    if summary.guard:
        blocks.append(Bullets([
            f"Guard {task_label(task)}: child {v.child:.3f}, floor {v.floor:.3f} "
            f"({v.reference_model} - {v.tolerance}): "
            + ("kept." if v.within else "BROKEN.") for task, v in summary.guard.items()]))
    return blocks


def _task_words(spec) -> str:
    """'fitness, acc, n=512' (and the shots when there are any)."""
    shots = f", {spec.shots}-shot" if spec.shots else ""
    return f"{spec.role}, {spec.metric}{shots}, n={spec.n if spec.n is not None else 'all'}"


def _fitness_cell(value) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def baseline_blocks(summary: SummaryRecord) -> list[Block]:
    """The baselines against the child: the headline sentences, every baseline's row and
    the tuned points' grid (empty without baselines in the holdout table)."""
    rows = baseline_rows(summary)
    if not rows:
        return []
    blocks: list[Block] = [
        "Baselines: merges of the same parents a user would otherwise pick, fixed or tuned on "
        "the search split by the search's own objective (docs/EVOLVE.md, \"Baselines\"); the "
        "last column is the child's paired difference on the holdout fitness.",
        *headline(summary), Table(BASELINE_HEADERS, rows)]
    headers, grid = grid_rows(summary)
    if grid:
        search = summary.baseline_search
        blocks += [f"Tuned points on the search split ({len(search.points)} points in "
                   f"{search.seconds:.0f} s; the fitness less the guard penalty; `~`: racing's "
                   "estimate for a point stopped early; (guard): a guard broken; `*`: guards "
                   "not scored, the point being below its recipe's best ones):",
                   Table(headers, grid)]
    return blocks
