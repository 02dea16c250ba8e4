"""A cheap fingerprint of a model folder: what a resumed run compares to notice a change.

SHA-256 over config.json, the tokenizer files, every weight file's name and size, and
for each weight file its first and last MiB plus 16 evenly spaced 64 KiB windows. A
retrained model of the same shapes changes every window, so it changes the fingerprint;
a multi-GB model costs about 2 MiB of reading per file, not the whole file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SIDE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "tokenizer.model", "chat_template.jinja")
EDGE = 1 << 20
WINDOW = 1 << 16
WINDOWS = 16


def _windows(size: int) -> list[tuple[int, int]]:
    if size <= 2 * EDGE + WINDOWS * WINDOW:
        return [(0, size)]
    spots = [(0, EDGE), (size - EDGE, EDGE)]
    step = (size - 2 * EDGE) // (WINDOWS + 1)
    return spots + [(EDGE + step * (k + 1), WINDOW) for k in range(WINDOWS)]


def model_fingerprint(folder: str | Path) -> str:
    """The folder's fingerprint (hex SHA-256); see the module docstring."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for name in SIDE_FILES:
        path = folder / name
        if path.is_file():
            digest.update(f"{name}\0".encode())
            digest.update(path.read_bytes())
    for path in sorted(folder.glob("*.safetensors")):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as handle:
            for start, length in _windows(size):
                handle.seek(start)
                digest.update(handle.read(length))
    return digest.hexdigest()
