"""Turn a GGUF file into a normal Hugging Face folder (safetensors + tokenizer).

transformers de-quantises GGUF weights to float on load, but a model so loaded
refuses `save_pretrained`; we copy its state dict into a model built from its own
config and save that, with the tokenizer, chat template and generation config.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..errors import ModelFormatError
from .dtypes import parse_dtype
from .loading import quiet_transformers
from .writer import atomic_output_dir

SOURCE_URL_KEYS = ("general.source.repo_url", "general.source.url")
HUB_URL = re.compile(r"https?://huggingface\.co/([\w.-]+/[\w.-]+)/?")


def _check_gguf(path: Path) -> None:
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such GGUF file")
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelFormatError(f"{path}: not a GGUF file (bad magic bytes)")


def import_gguf(gguf_file: str | Path, out_dir: str | Path, dtype: str = "float32",
                overwrite: bool = False) -> Path:
    """Import `gguf_file` into `out_dir`; returns the output folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_file)
    torch_dtype = parse_dtype(dtype)
    _check_gguf(path)
    # transformers logs warnings per tensor and draws its own tqdm bars (de-quantising,
    # loading, writing); keep the terminal readable
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            loaded = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, dtype=torch.float32
            )
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(f"{path}: transformers cannot load this GGUF ({first})") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    with quiet_transformers():
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.load_state_dict(loaded.state_dict())
    model.to(torch_dtype)
    del loaded
    generation_config = model.generation_config
    _align_special_tokens(tokenizer, model.config, generation_config)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp, quiet_transformers():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        generation_config.save_pretrained(tmp)
        _drop_gguf_traces(tmp)
        _record_hub_id(tmp, gguf_hub_id(path))
    return Path(out_dir)


def gguf_hub_id(path: Path) -> str | None:
    """The Hub id (org/name) of the model a GGUF file was converted from, when its metadata
    names one (`general.source.repo_url` or `general.source.url` on huggingface.co)."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    for key in SOURCE_URL_KEYS:
        if key in fields:
            match = HUB_URL.fullmatch(str(fields[key].contents()).strip())
            if match:
                return match.group(1)
    return None


def _record_hub_id(folder: Path, hub_id: str | None) -> None:
    """Name the source model in config.json's `_name_or_path` (the model card reads it)."""
    if hub_id is None:
        return
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data["_name_or_path"] = hub_id
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _align_special_tokens(tokenizer, config, generation_config) -> None:
    """Make config, generation config and tokenizer agree on bos/eos/pad ids.

    GGUF metadata and the tokenizer it yields are the source of truth: the chat
    template ends turns with the tokenizer's eos token, so generation must stop there.
    """
    for attr in ("bos", "eos", "pad"):
        token_id = getattr(tokenizer, f"{attr}_token_id", None)
        if token_id is None:
            continue
        for target in (config, generation_config):
            if getattr(target, f"{attr}_token_id", None) in (None, token_id) or attr != "bos":
                setattr(target, f"{attr}_token_id", token_id)


def _drop_gguf_traces(folder: Path) -> None:
    """Remove GGUF file references from the saved configs (the folder stands alone)."""
    for name in ("config.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        changed = False
        for key in ("quantization_config", "gguf_file", "_name_or_path", "name_or_path"):
            if key in data:
                data.pop(key)
                changed = True
        if changed:
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
