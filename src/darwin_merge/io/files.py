"""Single files written whole or not at all: a temporary file beside the target, renamed."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OutputError


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temporary file renamed into place, so a
    reader never sees half a file; the parent folder is created when missing."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc}") from exc
    return path
