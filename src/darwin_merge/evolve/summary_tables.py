"""The finished run's summary for the terminal: report_tables' content (the holdout and
baselines' tables, the guards) drawn with rich, then what racing stopped, the health
verdict and where the child, card and report are.

`darwin evolve` and `darwin demo run` print these items (rich tables and markup lines).
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table as RichTable

from ..card.blocks import Block, Bullets, Table
from ..records import SummaryRecord, file_names
from ..report_tables import baseline_blocks, holdout_blocks


def summary_tables(record: SummaryRecord, run_dir: Path) -> list:
    """summary.json's holdout scores, the child's paired differences, the guards' verdicts,
    the baselines, what racing stopped, the health verdict and where the child, card and
    report are."""
    items = [item for block in holdout_blocks(record) + baseline_blocks(record)
             for item in terminal_items(block)]
    if record.phase2.stopped_by_racing is not None:
        items.append(racing_line(record))
    items.append(f"health: {record.health.verdict if record.health else None}")
    child = run_dir / file_names.CHILD_DIR
    items.append(f"child: {child}   card: {child / file_names.CARD}   "
                 f"report: {run_dir / file_names.REPORT}")
    return items


def racing_line(record: SummaryRecord) -> str:
    """How many Phase 2 candidates racing stopped, and how many of them within one standard
    error of the incumbent's fitness (close calls; not counted in older records)."""
    phase2 = record.phase2
    near = ("" if phase2.stopped_within_one_se is None else
            f", {phase2.stopped_within_one_se} of them within one standard error of the "
            "incumbent")
    return (f"racing: {phase2.stopped_by_racing} of {phase2.trials} Phase 2 candidates "
            f"stopped early{near}")


def terminal_items(block: Block) -> list:
    """One content block as what rich prints: a table (its first column kept whole: the
    baselines' names are long), or lines of text (markup escaped)."""
    if isinstance(block, Table):
        table = RichTable()
        for i, header in enumerate(block.headers):
            table.add_column(escape(header), no_wrap=i == 0)
        for row in block.rows:
            table.add_row(*(escape(cell) for cell in row))
        return [table]
    if isinstance(block, Bullets):
        return [escape(item).replace("BROKEN", "[red]BROKEN[/red]") for item in block.items]
    if isinstance(block, str):
        return [escape(block)]
    raise TypeError(f"no terminal form for a {type(block).__name__} block")
