"""Atomic writing of model folders and other outputs.

Everything is written into a hidden temporary folder beside the target and renamed
into place only when complete, so a killed or failed run never leaves a folder that
looks finished. A lock file beside the target keeps two writers from racing; its kernel
lock dies with its process, so a killed writer never blocks the next run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from safetensors.torch import save_file

from ..errors import OutputError

DEFAULT_SHARD_BYTES = 2 * 1024**3

# Files a child takes from its father besides the weights (never code: no *.py).
MODEL_SIDE_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja",
    "chat_template.json", "generation_config.json", "processor_config.json",
    "preprocessor_config.json", "LICENSE", "LICENSE.txt",
)


def _disk_error(exc: OSError, target: Path) -> OutputError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return OutputError(f"{target}: not enough disk space ({exc.strerror}); partial "
                           "output removed")
    return OutputError(f"{target}: cannot write ({exc.strerror or exc})")


def _take_lock(lock: Path, target: Path) -> FileLock:
    """Hold an exclusive lock on `lock`, the holder's PID written in it; refuse if another
    process holds it.

    The lock (filelock's: a kernel flock on Linux and macOS) dies with its process, so a
    writer killed with SIGKILL leaves a lock file nobody holds, and the next run simply
    takes it over. A file that a finishing writer unlinked meanwhile is not taken (filelock
    checks) and no longer there: then the new file is tried.
    """
    held = FileLock(lock, timeout=0)
    while True:
        try:
            held.acquire()
        except Timeout as exc:
            if lock.exists():
                raise OutputError(f"{target}: another Darwin process (PID {_holder(lock)}) is "
                                  "writing it; wait for it to finish") from exc
            continue
        lock.write_text(str(os.getpid()))
        return held


def _holder(lock: Path) -> str:
    try:
        return lock.read_text(errors="replace").strip()[:32] or "?"
    except OSError:
        return "?"


def _release_lock(lock: Path, held: FileLock) -> None:
    with contextlib.suppress(OSError):
        lock.unlink()
    held.release()  # after the unlink, so no one locks a dead file


def _remove_dead_writers_tmp(parent: Path, name: str) -> None:
    """Delete temporary folders of killed writers (safe: we hold the lock for `name`)."""
    for stale in parent.glob(f".{name}.darwin-tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _restore_moved_aside(parent: Path, target: Path) -> None:
    """Put back a previous output that a killed --overwrite run had moved aside.

    Overwriting renames the old folder to `.NAME.darwin-old-PID`, renames the new one
    into place, then deletes the old one; a writer killed between the two renames
    leaves no `target` at all. Restoring it means nothing the user had is lost; the
    run then goes on as usual (refused without --overwrite, replacing it with).
    """
    if target.exists():
        return
    for old in sorted(parent.glob(f".{target.name}.darwin-old-*")):
        os.rename(old, target)
        return


@contextlib.contextmanager
def atomic_output_dir(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes `target` when the block ends without error."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: already exists (pass --overwrite to replace it)")
    parent = target.parent
    lock = parent / f".{target.name}.darwin-lock"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        held = _take_lock(lock, target)
    except OSError as exc:
        raise _disk_error(exc, target) from exc
    tmp = parent / f".{target.name}.darwin-tmp-{os.getpid()}"
    try:
        _restore_moved_aside(parent, target)
        if target.exists() and not overwrite:  # finished by the writer we waited on
            raise OutputError(f"{target}: already exists (pass --overwrite to replace it)")
        _remove_dead_writers_tmp(parent, target.name)
        tmp.mkdir()
        try:
            yield tmp
        except OSError as exc:
            raise _disk_error(exc, target) from exc
        if target.exists():  # overwrite: move the old one aside only now
            old = parent / f".{target.name}.darwin-old-{os.getpid()}"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _release_lock(lock, held)


class ModelWriter:
    """Streams tensors into sharded safetensors files with an index.

    Holds at most one shard in memory. `add` tensors in any order, then `finish`;
    the caller provides the (temporary) folder, usually from `atomic_output_dir`.
    """

    def __init__(self, folder: Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                 metadata: dict[str, str] | None = None):
        self.folder = Path(folder)
        self.max_shard_bytes = max_shard_bytes
        self.metadata = {"format": "pt", **(metadata or {})}
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[list[str]] = []
        self._total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._pending or any(name in s for s in self._shards):
            raise ValueError(f"tensor {name!r} written twice")
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        self._pending[name] = tensor.detach().to("cpu").contiguous()
        self._pending_bytes += nbytes
        self._total_bytes += nbytes

    def _flush(self) -> None:
        if not self._pending:
            return
        index = len(self._shards)
        save_file(self._pending, str(self.folder / f"shard-{index:05d}.tmp"), self.metadata)
        self._shards.append(list(self._pending))
        self._pending, self._pending_bytes = {}, 0

    def finish(self) -> list[str]:
        """Write the last shard, give shards their final names and write the index."""
        self._flush()
        count = len(self._shards)
        if count == 1:
            os.rename(self.folder / "shard-00000.tmp", self.folder / "model.safetensors")
            return ["model.safetensors"]
        names, weight_map = [], {}
        for i, tensor_names in enumerate(self._shards):
            final = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            os.rename(self.folder / f"shard-{i:05d}.tmp", self.folder / final)
            names.append(final)
            weight_map.update({t: final for t in tensor_names})
        index = {"metadata": {"total_size": self._total_bytes},
                 "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        return names


def copy_side_files(source: Path, folder: Path) -> list[str]:
    """Copy tokenizer, chat template and generation files from a parent (no code files)."""
    copied = []
    for name in MODEL_SIDE_FILES:
        src = source / name
        if src.is_file() and not src.is_symlink():
            shutil.copyfile(src, folder / name)
            copied.append(name)
    return copied


def write_config(config: dict, folder: Path, dtype: torch.dtype | None = None) -> None:
    """Write config.json, recording the dtype the weights were written in."""
    config = dict(config)
    if dtype is not None:
        config["dtype"] = str(dtype).removeprefix("torch.")
        config.pop("torch_dtype", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
