"""A model folder's fingerprint: what a resumed run compares to know the parents are
the same ones it started with.

Hashing every weight byte of a 10 GB model costs a minute per resume; the headers
alone (names, shapes, dtypes, offsets) are the same for every fine-tune of one base.
So the fingerprint hashes config.json, each weight file's name, size and raw header,
and a sample of its data (the first and last `SAMPLE_BYTES`): a retrained mother
changes its weights everywhere, so its samples change.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from ..errors import ModelFormatError
from .reader import ModelSource

SAMPLE_BYTES = 1 << 16


def model_fingerprint(folder: str | Path) -> str:
    """sha256 (hex) of config.json and every weight file's header and data samples."""
    folder = Path(folder)
    digest = hashlib.sha256()
    with ModelSource(folder) as source:
        files = sorted({spec.file for spec in source.specs()})
    digest.update((folder / "config.json").read_bytes())
    for name in files:
        digest.update(name.encode() + b"\0")
        _hash_weight_file(folder / name, digest)
    return digest.hexdigest()


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
            start = 8 + header_len if header_len else 0
            handle.seek(start)
            digest.update(handle.read(SAMPLE_BYTES))
            handle.seek(max(start, size - SAMPLE_BYTES))
            digest.update(handle.read(SAMPLE_BYTES))
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror})") from exc


def parents_fingerprint(father, mother, base=None) -> dict[str, str | None]:
    """{"father": ..., "mother": ..., "base": ... or None} fingerprints."""
    return {"father": model_fingerprint(father), "mother": model_fingerprint(mother),
            "base": model_fingerprint(base) if base is not None else None}
