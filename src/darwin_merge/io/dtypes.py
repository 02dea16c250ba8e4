"""The one dtype table: safetensors codes, their sizes, their torch dtypes, the names users type.

safetensors spells a dtype as a code (`F32`, `BF16`, ...); torch has its own objects; the
command line takes names (`--dtype bfloat16`). Every translation between them is here. The
table names torch's dtypes instead of holding them, so the taxonomy can read it without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    import torch

# Every code the safetensors format defines: bytes per element, and the torch dtype the
# tools read and write it as (None: a code whose tensors the tools never handle).
DTYPES = {
    "F64": (8, "float64"), "F32": (4, "float32"), "F16": (2, "float16"), "BF16": (2, "bfloat16"),
    "I64": (8, "int64"), "I32": (4, "int32"), "I16": (2, "int16"), "I8": (1, "int8"),
    "U8": (1, "uint8"), "BOOL": (1, "bool"),
    "U64": (8, None), "U32": (4, None), "U16": (2, None),
    "F8_E4M3": (1, None), "F8_E5M2": (1, None),
}
DTYPE_SIZES = {code: size for code, (size, _) in DTYPES.items()}
_CODES = {name: code for code, (_, name) in DTYPES.items() if name}
# Float parameters: the ones a merge blends and `--dtype` casts.
FLOAT_CODES = ("F64", "F32", "F16", "BF16")
# What `--dtype` accepts.
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def parse_dtype(name: str) -> torch.dtype:
    """The torch dtype of a `--dtype` name; UsageError for any other name."""
    if name not in DTYPE_NAMES:
        raise UsageError(f"unknown dtype {name!r} (choose from {', '.join(DTYPE_NAMES)})")
    import torch

    return getattr(torch, name)


def eval_dtype_entry(eval_dtype: str | None, dtype: str) -> dict[str, str]:
    """`{"eval_dtype": name}` for a record of settings when the forward passes run in
    another dtype than `dtype`, else `{}`: scans and studies made before `--eval-dtype`
    existed (or without it) keep their identity. UsageError for an unknown name."""
    if eval_dtype in (None, dtype):
        return {}
    parse_dtype(eval_dtype)
    return {"eval_dtype": eval_dtype}


def torch_dtype(code: str) -> torch.dtype:
    """The torch dtype of a safetensors code (`BF16` -> torch.bfloat16)."""
    import torch

    return getattr(torch, DTYPES[code][1])


def safetensors_code(dtype: torch.dtype, default: str | None = None) -> str:
    """The safetensors code of a torch dtype (torch.bfloat16 -> `BF16`); `default`, if
    given, for a dtype without one (KeyError otherwise)."""
    code = _CODES.get(str(dtype).removeprefix("torch."), default)
    if code is None:
        raise KeyError(dtype)
    return code


def main_dtype(source) -> torch.dtype | None:
    """The torch dtype most float parameters of a model folder are stored in (None: none)."""
    counts: dict[str, int] = {}
    for spec in source.specs():
        if spec.is_float:
            counts[spec.dtype] = counts.get(spec.dtype, 0) + spec.numel
    return torch_dtype(max(counts, key=counts.get)) if counts else None
