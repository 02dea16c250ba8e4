"""Lazy, per-tensor reading of a Hugging Face model folder.

`ModelSource` knows every tensor's name, shape and dtype from the file headers and
reads one tensor at a time on request, so a scan or a merge never needs a whole
model in memory. It refuses what it should not open: paths that escape the folder,
pickle checkpoints (unless asked, and then only with `weights_only`), and configs
that ask for remote code (unless asked).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import ModelFormatError
from .dtypes import DTYPE_SIZES, FLOAT_CODES, safetensors_code
from .model_ref import ModelRef, resolve_model
from .safetensors_header import read_header

SAFE_INDEX = "model.safetensors.index.json"
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# Files that could run code if a library were tricked into loading them.
CODE_SUFFIXES = (".py", ".pyc", ".so", ".dylib", ".dll", ".pkl", ".pickle", ".exe", ".sh")



@dataclass(frozen=True)
class TensorSpec:
    """What is known of a tensor without reading it."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors spelling: F32, BF16, ...
    file: str  # file name inside the model folder

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_CODES


def load_config(folder: Path, trust_remote_code: bool = False) -> dict:
    """Read config.json; refuse a config that needs code from the folder."""
    path = folder / "config.json"
    if not path.is_file():
        raise ModelFormatError(f"{folder}: no config.json (not a Hugging Face model folder)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: unreadable or not JSON") from exc
    if not isinstance(config, dict):
        raise ModelFormatError(f"{path}: not a JSON object")
    if trust_remote_code:
        return config
    if config.get("auto_map"):
        raise ModelFormatError(
            f"{path}: the model asks for remote code (auto_map); Darwin never runs code from a "
            "model folder unless you pass --trust-remote-code"
        )
    _refuse_code(folder)
    return config


def _refuse_code(folder: Path) -> None:
    """Refuse tokenizer configs that ask for code, and code files lying in the folder."""
    tok_config = folder / "tokenizer_config.json"
    if tok_config.is_file():
        try:
            data = json.loads(tok_config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{tok_config}: unreadable or not JSON") from exc
        if isinstance(data, dict) and data.get("auto_map"):
            raise ModelFormatError(f"{tok_config}: the tokenizer asks for remote code "
                                   "(auto_map); pass --trust-remote-code to allow it")
    code = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in CODE_SUFFIXES)
    if code:
        raise ModelFormatError(
            f"{folder}: unexpected code file(s) in the model folder ({', '.join(code[:3])}); "
            "Darwin never runs code from a model folder: remove them, or pass "
            "--trust-remote-code if you trust them"
        )


def _inside(folder: Path, name: str, root: Path | None = None) -> Path:
    """Resolve a file named by an index, refusing anything outside the model folder (or
    `root`, which holds it: a Hub cache's repository folder, whose snapshots link to its
    blobs)."""
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        raise ModelFormatError(f"{folder}: index names a file outside the model folder: {name!r}")
    root = (root or folder).resolve()
    path = (folder / name).resolve()
    if not path.is_relative_to(root):
        raise ModelFormatError(f"{folder}: index names a file outside the model folder: {name!r}")
    return path


class ModelSource:
    """A model folder whose tensors are read one at a time.

    Use as a context manager (or call `close`) to release the open files.
    """

    def __init__(self, path: str | Path | ModelRef, *, allow_pickle: bool = False,
                 trust_remote_code: bool = False):
        self.ref = resolve_model(path, allow_pickle=allow_pickle)  # a folder or a Hub id
        self.path = self.ref.path
        if not self.path.exists():
            raise ModelFormatError(f"{self.path}: no such model folder")
        if not self.path.is_dir():
            raise ModelFormatError(f"{self.path}: not a folder (a model is a folder with "
                                   "config.json and *.safetensors)")
        self.config = load_config(self.path, trust_remote_code)
        self._specs: dict[str, TensorSpec] = {}
        self._handles: dict[str, object] = {}
        self._pickled: dict[str, torch.Tensor] | None = None
        files = self._weight_files()
        if files is None:
            self._load_pickle(allow_pickle)
        else:
            for file in files:
                self._index_file(file)

    # -- discovery -------------------------------------------------------
    def _weight_files(self) -> list[Path] | None:
        index = self.path / SAFE_INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ModelFormatError(f"{index}: unreadable shard index") from exc
            if not isinstance(weight_map, dict):
                raise ModelFormatError(f"{index}: weight_map is not an object")
            files = sorted({_inside(self.path, name, self.ref.root)
                            for name in weight_map.values()})
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise ModelFormatError(f"{index}: names missing shard(s): {', '.join(missing)}")
            return files
        files = sorted(self.path.glob("*.safetensors"))
        for file in files:
            _inside(self.path, file.name, self.ref.root)  # a link out of it is refused too
        if files:
            return files
        if any((self.path / n).exists() for n in PICKLE_NAMES):
            return None
        raise ModelFormatError(f"{self.path}: no weights (*.safetensors) in the model folder")

    def _index_file(self, file: Path) -> None:
        entries, _ = read_header(file)
        for entry in entries:
            if entry.name in self._specs:
                raise ModelFormatError(f"{file}: tensor {entry.name!r} appears in two shards")
            self._specs[entry.name] = TensorSpec(entry.name, entry.shape, entry.dtype, file.name)

    def _load_pickle(self, allow_pickle: bool) -> None:
        if not allow_pickle:
            raise ModelFormatError(
                f"{self.path}: only a pickle checkpoint (pytorch_model.bin) is present; Darwin "
                "does not unpickle untrusted files. Convert it to safetensors, or pass "
                "--allow-pickle to load it with torch.load(weights_only=True)"
            )
        files = sorted(self.path.glob("pytorch_model*.bin"))
        self._pickled = {}
        for file in files:
            _inside(self.path, file.name, self.ref.root)
            try:
                state = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure is a format error
                raise ModelFormatError(f"{file}: cannot load safely ({exc})") from exc
            for name, tensor in state.items():
                self._pickled[name] = tensor
                dtype = safetensors_code(tensor.dtype, "F32")
                self._specs[name] = TensorSpec(name, tuple(tensor.shape), dtype, file.name)

    # -- access ----------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Tensor names in a stable order (sorted), the order every pass uses."""
        return sorted(self._specs)

    def spec(self, name: str) -> TensorSpec:
        return self._specs[name]

    def specs(self) -> list[TensorSpec]:
        return [self._specs[n] for n in self.names]

    def __contains__(self, name: str) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    @property
    def num_params(self) -> int:
        return sum(s.numel for s in self._specs.values())

    @property
    def total_bytes(self) -> int:
        return sum(s.numel * DTYPE_SIZES[s.dtype] for s in self._specs.values())

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (a fresh CPU tensor the caller may modify)."""
        if self._pickled is not None:
            return self._pickled[name].clone()
        spec = self._specs[name]
        handle = self._handles.get(spec.file)
        if handle is None:
            try:
                handle = safe_open(str(self.path / spec.file), framework="pt", device="cpu")
            except Exception as exc:  # noqa: BLE001 - the library raises several kinds
                raise ModelFormatError(f"{self.path / spec.file}: cannot open ({exc})") from exc
            self._handles[spec.file] = handle
        try:
            return handle.get_tensor(name)
        except Exception as exc:  # noqa: BLE001
            where = self.path / spec.file
            raise ModelFormatError(f"{where}: cannot read {name!r} ({exc})") from exc

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self) -> ModelSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
