"""Progress bars: one library (rich) and one look everywhere, drawn on stderr.

`narrator(name)` gives a command's one-line messages, led by its name, on the same stream.
`progress_bar(enabled)` is a `rich.progress.Progress` with the task's name, a bar, done/total,
elapsed time and the time left; disabled it draws nothing (library calls, tests, the search's
inner evaluations).
"""

from __future__ import annotations

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


def narrator(name: str) -> Callable[[str], None]:
    """`say(message)`: one line on stderr led by `name` in bold cyan (rich markup allowed)."""

    def say(message: str) -> None:
        STDERR.print(f"[bold cyan]{name}[/bold cyan] {message}", highlight=False)

    return say


def progress_bar(enabled: bool, transient: bool = False) -> Progress:
    """A Progress to use as a context manager; `transient` clears it when done."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=transient)


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
