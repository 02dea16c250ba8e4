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
from .model_ref import ModelRef, resolve_model
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


def load_tokenizer(path: str | Path | ModelRef):
    from transformers import AutoTokenizer

    path = resolve_model(path).path
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{path}: cannot load the tokenizer ({exc})") from exc


def load_model(path: str | Path | ModelRef, device: str = "cpu", dtype: str = "float32",
               trust_remote_code: bool = False):
    """Load a causal LM for inference, in eval mode, on `device` in `dtype` (a folder or
    a Hub id, see io/model_ref.py)."""
    from transformers import AutoModelForCausalLM

    with ModelSource(path, trust_remote_code=trust_remote_code) as source:
        path = source.path  # the safety checks, on the folder a Hub id resolves to
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=parse_dtype(dtype), trust_remote_code=trust_remote_code,
                use_safetensors=True,
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelFormatError(f"{path}: transformers cannot load this model ({exc})") from exc
    return model.to(resolve_device(device)).eval()


@contextmanager
def quiet_transformers():
    """transformers' warnings and its own tqdm bars ("Loading weights") off while it runs,
    restored after (the caller's logging is the caller's): darwin's progress is drawn by
    rich alone, and a log should not fill with a bar or a warning per tensor."""
    from transformers.utils import logging as transformers_logging

    logger = logging.getLogger("transformers")
    level, bars_on = logger.level, transformers_logging.is_progress_bar_enabled()
    logger.setLevel(logging.ERROR)
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars_on:
            transformers_logging.enable_progress_bar()
