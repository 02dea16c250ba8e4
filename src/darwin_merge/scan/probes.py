"""Probe sets (short prompts per skill) and the per-layer probe profile of a model.

A probe folder holds one `<name>.jsonl` file per probe set, one `{"text": "..."}`
object per line; the set's name is the file stem in capitals. The package ships
REASONING, CODE, MATH, KNOWLEDGE and LANGUAGE (written for this project);
`--probes DIR` replaces them with a folder of the same layout.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch

from ..errors import UsageError
from ..jsonl import iter_jsonl
from .layers import layer_skip_distances

DEFAULT_PROBES = ("REASONING", "CODE", "MATH", "KNOWLEDGE", "LANGUAGE")


def default_probe_dir() -> Path:
    return Path(str(resources.files("darwin_merge").joinpath("data", "probes")))


def _read_probe_file(path: Path) -> list[str]:
    texts = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the probe file ({exc})") from exc
    for number, record in iter_jsonl("\n".join(lines), str(path)):
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f'{path}:{number}: expected {{"text": "<non-empty prompt>"}}')
        texts.append(text)
    if not texts:
        raise UsageError(f"{path}: the probe file holds no prompts")
    return texts


def _order(name: str) -> tuple[int, str]:
    return (DEFAULT_PROBES.index(name) if name in DEFAULT_PROBES else len(DEFAULT_PROBES), name)


def load_probes(folder: str | Path | None = None) -> dict[str, list[str]]:
    """Probe sets by name (the five defaults first, in their usual order, then others)."""
    folder = default_probe_dir() if folder is None else Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such probe folder")
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise UsageError(f"{folder}: no probe files (*.jsonl with one {{\"text\": ...}} per line)")
    probes = {f.stem.upper(): _read_probe_file(f) for f in files}
    if len(probes) != len(files):
        raise UsageError(f"{folder}: two probe files differ only in case")
    return {name: probes[name] for name in sorted(probes, key=_order)}


def probes_sha256(probes: dict[str, list[str]]) -> str:
    """A stable hash of the prompts (names and texts), recorded in scan.json."""
    canonical = json.dumps(probes, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def normalise_weights(names: list[str], weights: dict[str, float] | None) -> dict[str, float]:
    """Weights per probe set summing to 1 (equal by default); unknown names refused."""
    if weights is None:
        return {n: 1.0 / len(names) for n in names}
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise UsageError(f"probe weights name unknown probe set(s): {', '.join(unknown)}")
    raw = {n: float(weights.get(n, 0.0)) for n in names}
    if any(w < 0 for w in raw.values()) or sum(raw.values()) <= 0:
        raise UsageError("probe weights must be >= 0 with a positive sum")
    total = sum(raw.values())
    return {n: w / total for n, w in raw.items()}


def parse_weights(text: str | None) -> dict[str, float] | None:
    """`REASONING=2,CODE=1` -> {"REASONING": 2.0, "CODE": 1.0} (None stays None)."""
    if not text:
        return None
    weights = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            weights[name.strip().upper()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UsageError(f"probe weight {part!r}: expected NAME=NUMBER")
    return weights


def context_length(model) -> int | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") \
        else model.config
    return getattr(config, "max_position_embeddings", None)


def tokenize_probe(tokenizer, name: str, texts: list[str], max_tokens: int,
                   context: int | None) -> list[list[int]]:
    """Token ids of each prompt, cut to `max_tokens`; a prompt beyond the context is refused."""
    rows = []
    for number, text in enumerate(texts, 1):
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        if context is not None and len(ids) > context:
            raise UsageError(f"probe {name} prompt {number} has {len(ids)} tokens, more than "
                             f"the model's context of {context}")
        rows.append(list(ids[:max_tokens]))
    return rows


def batches(rows: list[list[int]], batch_size: int, pad_id: int,
            device: torch.device | str = "cpu"):
    """(input_ids, attention_mask) batches, right-padded (padding never reaches a real token)."""
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, row in enumerate(chunk):
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, :len(row)] = 1
        yield ids.to(device), mask.to(device)


def pad_id_of(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def probe_profile(model, token_rows: dict[str, list[list[int]]], pad_id: int,
                  batch_size: int = 8, method: str = "cached",
                  on_batch: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Per probe set, each decoder layer's skip distance averaged over the set's prompts."""
    device = next(model.parameters()).device
    profile = {}
    for name, rows in token_rows.items():
        per_prompt = []
        for ids, mask in batches(rows, batch_size, pad_id, device):
            per_prompt.append(layer_skip_distances(model, ids, mask, method).cpu())
            if on_batch is not None:
                on_batch()
        profile[name] = torch.cat(per_prompt, dim=1).double().mean(dim=1).tolist()
    return profile


def probe_scores(profile: dict[str, list[float]], weights: dict[str, float]) -> list[float]:
    """probe_score(layer) = sum over probe sets of distance * weight."""
    num_layers = len(next(iter(profile.values())))
    return [sum(profile[n][layer] * weights[n] for n in profile) for layer in range(num_layers)]
