"""Reading JSON Lines files that users hand us (tasks, probes), with line-numbered errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

from .errors import UsageError


def iter_jsonl(text: str, where: str) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line; bad JSON names its line."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: line {number} is not valid JSON ({exc.msg})") from exc
