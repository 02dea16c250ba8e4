"""A model folder's fingerprint: what a resumed run compares to know its inputs are the
same ones it started with (the parents of a study, of phase1.json, of a kept scan).

Hashing every weight byte of a 10 GB model costs a minute per resume; the headers alone
(names, shapes, dtypes, offsets) are the same for every fine-tune of one base. So the
fingerprint hashes config.json and the tokenizer files, each weight file's name, size and
raw header, and samples of its data: the first and last MiB and 16 evenly spaced 64 KiB
windows between them. A retrained mother changes its weights everywhere, so its samples
change; a multi-GB file costs about 3 MiB of reading.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from ..errors import ModelFormatError
from .reader import ModelSource

SIDE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "tokenizer.model", "chat_template.jinja")
EDGE = 1 << 20
WINDOW = 1 << 16
WINDOWS = 16


def model_fingerprint(folder: str | Path) -> str:
    """sha256 (hex) of the side files and every weight file's header and data samples."""
    folder = Path(folder)
    digest = hashlib.sha256()
    with ModelSource(folder) as source:
        files = sorted({spec.file for spec in source.specs()})
    for name in SIDE_FILES:
        if (folder / name).is_file():
            digest.update(name.encode() + b"\0")
            digest.update((folder / name).read_bytes())
    for name in files:
        digest.update(name.encode() + b"\0")
        _hash_weight_file(folder / name, digest)
    return digest.hexdigest()


def _windows(start: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the data samples of a file whose data spans start..size."""
    span = size - start
    if span <= 2 * EDGE + WINDOWS * WINDOW:
        return [(start, span)]
    step = (span - 2 * EDGE) // (WINDOWS + 1)
    inner = [(start + EDGE + step * (k + 1), WINDOW) for k in range(WINDOWS)]
    return [(start, EDGE), *inner, (size - EDGE, EDGE)]


def _hash_weight_file(path: Path, digest) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            digest.update(struct.pack("<Q", size))
            if path.suffix != ".safetensors":  # an opted-in pickle: its samples only
                header_len = 0
            else:
                (header_len,) = struct.unpack("<Q", handle.read(8))
                digest.update(handle.read(header_len))  # checked by ModelSource already
            for offset, length in _windows(8 + header_len if header_len else 0, size):
                handle.seek(offset)
                digest.update(handle.read(length))
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror})") from exc


def parents_fingerprint(father, mother, base=None) -> dict[str, str | None]:
    """{"father": ..., "mother": ..., "base": ... or None} fingerprints."""
    return {"father": model_fingerprint(father), "mother": model_fingerprint(mother),
            "base": model_fingerprint(base) if base is not None else None}
