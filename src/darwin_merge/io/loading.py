"""Loading a model folder into a runnable transformers model, safely.

Every load goes through `ModelSource` first, so the same refusals apply (pickle
checkpoints, remote code, paths outside the folder) before transformers sees it.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import ModelFormatError, UsageError
from .dtypes import parse_dtype
from .reader import ModelSource


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda`, `cuda:N` or `auto` (cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but this torch build sees no CUDA device")
    return device


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{path}: cannot load the tokenizer ({exc})") from exc


def load_model(path: str | Path, device: str = "cpu", dtype: str = "float32",
               trust_remote_code: bool = False):
    """Load a causal LM for inference, in eval mode, on `device` in `dtype`."""
    from transformers import AutoModelForCausalLM

    with ModelSource(path, trust_remote_code=trust_remote_code):
        pass  # the safety checks
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        with no_transformers_bars():
            model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=parse_dtype(dtype), trust_remote_code=trust_remote_code,
                use_safetensors=True,
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelFormatError(f"{path}: transformers cannot load this model ({exc})") from exc
    return model.to(resolve_device(device)).eval()


@contextmanager
def no_transformers_bars():
    """transformers' own tqdm bar ("Loading weights") off while it runs: darwin's
    progress is drawn by rich alone, and a log should not fill with a bar per load."""
    from transformers.utils import logging as transformers_logging

    was_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            transformers_logging.enable_progress_bar()


def model_from_state(config_dir: str | Path, state: dict[str, torch.Tensor],
                     device: str = "cpu", dtype: str = "float32"):
    """Build a model from a folder's config and an in-memory state dict (no disk write).

    The search uses this to score a candidate child without writing it out.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    logging.getLogger("transformers").setLevel(logging.ERROR)
    config = AutoConfig.from_pretrained(str(config_dir), trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=parse_dtype(dtype))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if not _is_tied(model, m)]
    if missing or unexpected:
        raise ModelFormatError(
            f"state does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    model.tie_weights()
    return model.to(resolve_device(device), parse_dtype(dtype)).eval()


def _is_tied(model, name: str) -> bool:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    keys = tied.keys() if isinstance(tied, dict) else tied
    return name in keys or name.endswith("lm_head.weight")
