"""A strict reader of safetensors headers, for files that come from strangers.

The `safetensors` library does its own checks, but its errors are terse and it
trusts a few things we prefer to check first (header size, overlaps). This module
parses the header by hand and refuses anything that lies, with a message that
names the file; the bytes themselves are then read lazily through `safetensors`.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFormatError
from .dtypes import DTYPE_SIZES

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit
MAX_DIMS = 8



@dataclass(frozen=True)
class HeaderEntry:
    """One tensor as a safetensors header describes it (offsets into the data area)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def read_header(path: Path) -> tuple[list[HeaderEntry], dict[str, str]]:
    """Return the checked tensor entries (in file order) and the metadata of one file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            raw_len = handle.read(8)
            if len(raw_len) < 8:
                raise ModelFormatError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise ModelFormatError(
                    f"{path}: corrupt safetensors header (claims {header_len} bytes, "
                    f"file has {size})"
                )
            raw = handle.read(header_len)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror})") from exc
    return parse_header(raw, data_size=size - 8 - header_len, where=str(path))


def parse_header(raw: bytes, data_size: int, where: str) -> tuple[list[HeaderEntry], dict]:
    """Parse and check a header's JSON against the size of the data that follows it."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFormatError(f"{where}: corrupt safetensors header (not JSON)") from exc
    if not isinstance(doc, dict):
        raise ModelFormatError(f"{where}: corrupt safetensors header (not an object)")
    metadata = doc.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict):
        raise ModelFormatError(f"{where}: corrupt safetensors header (bad __metadata__)")
    entries = [_entry(name, spec, data_size, where) for name, spec in doc.items()]
    entries.sort(key=lambda e: (e.begin, e.end))
    previous_end = 0
    for entry in entries:
        if entry.begin < previous_end:
            raise ModelFormatError(f"{where}: tensor {entry.name!r} overlaps another tensor")
        previous_end = entry.end
    return entries, metadata


def _entry(name: object, spec: object, data_size: int, where: str) -> HeaderEntry:
    bad = f"{where}: corrupt safetensors header at tensor {name!r}"
    if not isinstance(name, str) or not isinstance(spec, dict):
        raise ModelFormatError(bad)
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:  # a list is unhashable
        raise ModelFormatError(f"{bad} (unknown dtype {dtype!r})")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ModelFormatError(f"{bad} (bad shape {shape!r})")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise ModelFormatError(f"{bad} (bad data_offsets)")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise ModelFormatError(f"{bad} (data offsets {begin}..{end} outside the file)")
    if math.prod(shape) * DTYPE_SIZES[dtype] != end - begin:
        raise ModelFormatError(f"{bad} (shape {shape} does not match its {end - begin} bytes)")
    return HeaderEntry(name, dtype, tuple(shape), begin, end)
