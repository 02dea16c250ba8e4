"""Tiny random models of every supported family, built from transformers configs.

Each builder returns a saved Hugging Face folder with a character-level tokenizer,
so tests can run forward passes, scans and evaluations in milliseconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from darwin_recipes.demo.tiny import (  # the tiny Llama and its tokenizer are the demo's
    VOCAB_SIZE,
    char_tokenizer,
    llama_config,
    text_config_fields,
)

__all__ = ["VOCAB_SIZE", "char_tokenizer"]  # re-exported for the tests


def gemma3_config(n_layers: int = 4):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(**text_config_fields(n_layers), max_position_embeddings=256,
                            sliding_window=16, query_pre_attn_scalar=32)


def gemma4_config(n_layers: int = 4, moe: bool = False):
    from transformers import Gemma4Config

    text = dict(text_config_fields(n_layers), vocab_size_per_layer_input=VOCAB_SIZE,
                hidden_size_per_layer_input=16, num_kv_shared_layers=2,
                layer_types=["sliding_attention", "full_attention"] * (n_layers // 2),
                max_position_embeddings=256, sliding_window=16)
    if moe:
        text.update(enable_moe_block=True, num_experts=4, top_k_experts=2,
                    moe_intermediate_size=32)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=16)
    audio = dict(hidden_size=32, num_hidden_layers=2, output_proj_dims=64,
                 subsampling_conv_channels=[8, 4], num_attention_heads=2)
    return Gemma4Config(text_config=text, vision_config=vision, audio_config=audio)


CONFIGS = {
    "llama": llama_config,
    "gemma3": gemma3_config,
    "gemma4": gemma4_config,
    "gemma4_moe": lambda n_layers=4: gemma4_config(n_layers, moe=True),
}


def build_model(family: str, seed: int = 0, n_layers: int = 4):
    """A random model of `family` (see CONFIGS), deterministic for a seed."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(CONFIGS[family](n_layers))
    return model.eval()


def save_model(model, folder: Path, max_shard_size: str | int = "5GB") -> Path:
    """Save a model with the char tokenizer and its chat template (safetensors)."""
    folder = Path(folder)
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    char_tokenizer().save_pretrained(folder)
    return folder


def make_tiny(family: str, folder: Path, seed: int = 0, sharded: bool = False,
              n_layers: int = 4) -> Path:
    """Build and save a tiny model; `sharded` splits it into several safetensors files."""
    model = build_model(family, seed, n_layers)
    return save_model(model, folder, max_shard_size="100KB" if sharded else "5GB")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja")


def perturbed_copy(source: Path, folder: Path, scale: float = 0.01, seed: int = 1) -> Path:
    """A second parent: the same model with small seeded noise on every float tensor."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=gen) * scale * (p.std() + 1e-3))
    save_model(model, folder)
    for name in TOKENIZER_FILES:  # a real model keeps its own tokenizer
        if (Path(source) / name).is_file():
            shutil.copyfile(Path(source) / name, Path(folder) / name)
    return Path(folder)


def with_tokens(folder: Path, tokens: list[str], rows: int | None = None) -> Path:
    """Give a saved tiny model added tokens (and optionally `rows` embedding rows): parents
    whose vocabularies differ."""
    from transformers import AutoModelForCausalLM

    tokenizer = char_tokenizer()
    tokenizer.add_tokens(tokens)
    tokenizer.save_pretrained(folder)
    if rows is not None:
        model = AutoModelForCausalLM.from_pretrained(folder)
        model.resize_token_embeddings(rows, mean_resizing=False)
        model.save_pretrained(folder)
    return Path(folder)


def make_tiny_pair(folder: Path, seed: int = 0, scale: float = 0.01, mother_seed: int = 1
                   ) -> tuple[Path, Path]:
    """(father, mother): a tiny Llama and a seeded perturbed copy of it, in `folder`."""
    father = make_tiny("llama", Path(folder) / "father", seed=seed)
    return father, perturbed_copy(father, Path(folder) / "mother", scale=scale, seed=mother_seed)


def config_dict(folder: Path) -> dict:
    return json.loads((Path(folder) / "config.json").read_text())
