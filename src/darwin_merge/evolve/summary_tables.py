"""The finished run's summary for the terminal: the holdout tables, the guard, health, paths.

`darwin evolve` and `darwin demo run` print these items (rich tables and markup lines).
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from ..records import SummaryRecord, file_names
from ..report_tables import (
    BASELINE_HEADERS,
    baseline_rows,
    difference_cell,
    headline,
    score_cell,
    search_split_line,
    task_labels,
)


def summary_tables(record: SummaryRecord, run_dir: Path) -> list:
    """summary.json's holdout scores, the child's paired differences, the guard's verdicts,
    the health verdict and where the child, card and report are."""
    holdout = record.holdout
    tasks = list(holdout.tasks)
    labels = task_labels(tasks)
    table = Table(title="holdout results (each task's primary metric)")
    table.add_column("model", no_wrap=True)  # the baselines' names are long
    for task, spec in holdout.tasks.items():
        table.add_column(f"{labels[task]} ({spec.role}, {spec.metric}, n={spec.n})")
    table.add_column("fitness")
    for name, row in holdout.models.items():
        table.add_row(name, *[score_cell(row[t]) for t in tasks], f"{row['fitness']:.4f}")
    items: list = [table]
    if holdout.comparisons:
        paired = Table(title="child minus each model, same holdout items (paired SE, p-value)")
        for column in ("against", *[labels[t] for t in tasks], "fitness"):
            paired.add_column(column, no_wrap=column == "against")
        for name, comparison in holdout.comparisons.items():
            paired.add_row(name, *[difference_cell(comparison[t]) for t in (*tasks, "fitness")])
        items.append(paired)
    if record.search_split:
        items.append(search_split_line(record.search_split, record.limit))
    rows = baseline_rows(record)
    if rows:
        baselines = Table(title="baselines (docs/EVOLVE.md)")
        for i, column in enumerate(BASELINE_HEADERS):
            baselines.add_column(column, no_wrap=i == 0)
        for row in rows:
            baselines.add_row(*row)
        items += [baselines, *headline(record)]
    for task, verdict in (record.guard or {}).items():
        reference = verdict.reference_model or "best reference"
        items.append(f"guard {task}: child {verdict.child:.3f}, floor {verdict.floor:.3f} "
                     f"({reference} - {verdict.tolerance}): "
                     + ("kept" if verdict.within else "[red]BROKEN[/red]"))
    items.append(f"health: {record.health.verdict if record.health else None}")
    child = run_dir / file_names.CHILD_DIR
    items.append(f"child: {child}   card: {child / file_names.CARD}   "
                 f"report: {run_dir / file_names.REPORT}")
    return items
