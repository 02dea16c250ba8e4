"""Chunked reading and streaming writing of tensors, so a merge holds only a few chunks.

Reading: `TensorReader` copies a range of a tensor's elements out of a safetensors
file with plain reads (no memory map, whose touched pages would stay counted in the
process's memory until the file is closed).
Writing: `StreamingWriter` knows every output tensor's name, shape and dtype in
advance (from the merge plan), so it writes each shard's header first and then the
tensors' bytes as they are produced, in order; nothing waits in memory for a shard
to fill. Shards and index are named as `ModelWriter` names them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelFormatError
from .dtypes import DTYPE_SIZES, safetensors_code, torch_dtype
from .reader import SAFE_INDEX, ModelSource
from .safetensors_header import read_header


class TensorReader:
    """Element ranges of a model folder's tensors, read with plain file reads."""

    def __init__(self, source: ModelSource):
        self.source = source
        self._where: dict[str, tuple[Path, int]] = {}
        files = {spec.file for spec in source.specs()}
        for file in sorted(files):
            path = source.path / file
            if not file.endswith(".safetensors"):
                continue  # pickle checkpoints: read whole through the source
            entries, _ = read_header(path)
            with open(path, "rb") as handle:
                data_start = 8 + struct.unpack("<Q", handle.read(8))[0]
            for entry in entries:
                self._where[entry.name] = (path, data_start + entry.begin)
        self._handles: dict[Path, object] = {}

    def dtype(self, name: str) -> torch.dtype:
        return torch_dtype(self.source.spec(name).dtype)

    def read(self, name: str, start: int = 0, count: int | None = None) -> torch.Tensor:
        """Elements [start, start + count) of a tensor, flattened, as a fresh tensor."""
        spec = self.source.spec(name)
        count = spec.numel - start if count is None else count
        if name not in self._where:
            return self.source.get(name).flatten()[start:start + count].clone()
        size = DTYPE_SIZES[spec.dtype]
        path, offset = self._where[name]
        buffer = torch.empty(count * size, dtype=torch.uint8)
        handle = self._handles.get(path)
        if handle is None:
            handle = self._handles[path] = open(path, "rb")  # noqa: SIM115 - closed in close()
        handle.seek(offset + start * size)
        if handle.readinto(buffer.numpy()) != count * size:
            raise ModelFormatError(f"{path}: truncated data for tensor {name!r}")
        return buffer.view(self.dtype(name))

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


@dataclass(frozen=True)
class OutputTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty((), dtype=self.dtype).element_size()


def shard_layout(tensors: list[OutputTensor], max_shard_bytes: int) -> list[list[OutputTensor]]:
    """Split tensors, in order, into shards of at most max_shard_bytes (one tensor at least)."""
    shards: list[list[OutputTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return [s for s in shards if s]


def _header(shard: list[OutputTensor]) -> bytes:
    """A safetensors header (sorted keys, padded to 8 bytes) for tensors laid out in order."""
    entries, offset = {"__metadata__": {"format": "pt"}}, 0
    for tensor in shard:
        entries[tensor.name] = {"dtype": safetensors_code(tensor.dtype),
                                "shape": list(tensor.shape),
                                "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    text = json.dumps(entries, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


class StreamingWriter:
    """Writes planned tensors chunk by chunk, in plan order, straight into their shards."""

    def __init__(self, folder: Path, tensors: list[OutputTensor], max_shard_bytes: int):
        self.folder = Path(folder)
        self.shards = shard_layout(tensors, max_shard_bytes)
        self.names = self._file_names(len(self.shards))
        self._queue = [(i, t) for i, shard in enumerate(self.shards) for t in shard]
        self._next = 0  # index into _queue of the tensor being written
        self._written = 0  # bytes of that tensor written so far
        self._handle = None
        self._shard = -1

    @staticmethod
    def _file_names(count: int) -> list[str]:
        if count == 1:
            return ["model.safetensors"]
        return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]

    def write(self, name: str, chunk: torch.Tensor) -> None:
        """Append the next chunk of tensor `name` (chunks must come in plan order)."""
        shard, expected = self._queue[self._next]
        if name != expected.name or chunk.dtype != expected.dtype:
            raise ValueError(f"expected a {expected.dtype} chunk of {expected.name!r}, "
                             f"got {chunk.dtype} of {name!r}")
        if shard != self._shard:
            self._open(shard)
        data = chunk.detach().to("cpu").contiguous().flatten().view(torch.uint8)
        self._handle.write(memoryview(data.numpy()))
        self._written += data.numel()
        if self._written > expected.nbytes:
            raise ValueError(f"too many bytes written for {name!r}")
        if self._written == expected.nbytes:
            self._next, self._written = self._next + 1, 0

    def _open(self, shard: int) -> None:
        if self._handle is not None:
            self._handle.close()
        self._shard = shard
        self._handle = open(self.folder / self.names[shard], "wb")  # noqa: SIM115
        self._handle.write(_header(self.shards[shard]))

    def finish(self) -> list[str]:
        """Close the last shard, check every tensor was written, write the index if sharded."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._next != len(self._queue):
            raise ValueError(f"tensor {self._queue[self._next][1].name!r} was not written")
        if len(self.shards) > 1:
            weight_map = {t.name: self.names[i] for i, t in
                          ((i, t) for i, s in enumerate(self.shards) for t in s)}
            total = sum(t.nbytes for s in self.shards for t in s)
            index = {"metadata": {"total_size": total},
                     "weight_map": dict(sorted(weight_map.items()))}
            (self.folder / SAFE_INDEX).write_text(json.dumps(index, indent=2))
        return self.names

    def close(self) -> None:
        """Release the open file after a failure (the caller removes the folder)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

