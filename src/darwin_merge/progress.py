"""Progress bars: one library (rich) and one look everywhere, drawn on stderr.

`narrator(name)` gives a command's one-line messages, led by its name, on the same stream.
`progress_bar(enabled)` is a `rich.progress.Progress` with the task's name, a bar, done/total,
elapsed time and the time left; disabled it draws nothing (library calls, tests, the search's
inner evaluations). Where stderr is not a terminal (a log file, CI), rich draws the bars only
when they end, so a plain line per task is written at most every LOG_EVERY seconds instead:
a 15-minute fine-tune in a log says how far it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

STDERR = Console(stderr=True)
# Seconds between two plain progress lines of one task where stderr is not a terminal.
LOG_EVERY = 60.0


def narrator(name: str) -> Callable[[str], None]:
    """`say(message)`: one line on stderr led by `name` in bold cyan (rich markup allowed)."""

    def say(message: str) -> None:
        STDERR.print(f"[bold cyan]{name}[/bold cyan] {message}", highlight=False)

    return say


class LoggedProgress(Progress):
    """rich's Progress that, on a console that is not a terminal, also writes each task's
    state as a plain line at most every LOG_EVERY seconds (rich's own bars appear there
    only at the end)."""

    def __init__(self, *columns, **options):
        super().__init__(*columns, **options)
        self._last_line: dict = {}  # task id -> when its last line (or first update) was

    def update(self, task_id, **changes) -> None:
        super().update(task_id, **changes)
        self._log_line(task_id)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log_line(task_id)

    def _log_line(self, task_id) -> None:
        if self.disable or self.console.is_terminal:
            return
        now = time.monotonic()
        if now - self._last_line.setdefault(task_id, now) < LOG_EVERY:
            return
        self._last_line[task_id] = now
        task = next(t for t in self.tasks if t.id == task_id)
        done = f"{task.completed:g}" + ("" if task.total is None else f"/{task.total:g}")
        left = ("" if task.time_remaining is None
                else f", about {task.time_remaining:.0f} s left")
        self.console.print(f"{task.description}: {done} ({task.elapsed or 0:.0f} s{left})",
                           highlight=False)


def progress_bar(enabled: bool, transient: bool = False) -> Progress:
    """A Progress to use as a context manager; `transient` clears it when done."""
    return LoggedProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                          console=Console(stderr=True), disable=not enabled,
                          transient=transient)


def track(items: Iterable, total: int, description: str, enabled: bool) -> Iterator:
    """Yield `items` while a bar counts them."""
    with progress_bar(enabled, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


class TaskCounter:
    """One task of a `progress_bar`, for loops that learn their total late and count up."""

    def __init__(self, progress: Progress, description: str):
        self._progress = progress
        self._task = progress.add_task(description, total=None)

    def set_total(self, total: int) -> None:
        self._progress.update(self._task, total=total)

    def update(self, count: int) -> None:
        self._progress.advance(self._task, count)
