"""Single files written whole or not at all: a temporary file beside the target, renamed.

The one helper for a single file; a folder is written whole by `writer.atomic_output_dir`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import OutputError


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file renamed into place, so a reader
    never sees half a file; the parent folder is created when missing."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.darwin-tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """`write_bytes_atomic` of `text` in UTF-8."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def dump_json(path: str | Path, data) -> Path:
    """`data` as indented JSON (values JSON lacks written as text), written atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=str))
