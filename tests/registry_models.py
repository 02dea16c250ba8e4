"""Tiny configs for any causal-LM type transformers knows, by shrinking its defaults.

`tiny_config(model_type)` starts from the type's default config, replaces every size it
knows (widths, layer and head counts, experts, state sizes, vocabulary) with a tiny one,
and cuts per-layer lists to the new layer count. Sub-configs (text, vision, audio) are
shrunk the same way. `build_parents` raises CannotBuildTiny, with the reason, for a
type transformers cannot build, run or save tiny this way; the registry test and the
table in docs/ARCHITECTURES.md report those as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tiny_models import VOCAB_SIZE

NUM_LAYERS = 4
HIDDEN = 32
HEADS = 2
HEAD_DIM = HIDDEN // HEADS

# attribute -> tiny value, applied wherever the default config has the attribute
SIZES = {
    "vocab_size": VOCAB_SIZE,
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "n_embed", "dim", "embed_dim",
                     "word_embed_proj_dim", "hidden_dim", "d_embed"), HIDDEN),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "n_inner", "d_ff", "ffn_hidden_size",
                     "encoder_ffn_dim", "decoder_ffn_dim", "d_inner", "mlp_dim",
                     "dense_intermediate_size", "ffn_size"), 2 * HIDDEN),
    **dict.fromkeys(("moe_intermediate_size", "shared_expert_intermediate_size",
                     "expert_intermediate_size", "moe_shared_expert_intermediate_size",
                     "shared_intermediate_size"), HIDDEN),
    **dict.fromkeys(("num_hidden_layers", "n_layer", "num_layers", "n_layers",
                     "decoder_layers", "encoder_layers", "num_decoder_layers"), NUM_LAYERS),
    **dict.fromkeys(("num_attention_heads", "n_head", "n_heads", "num_heads",
                     "decoder_attention_heads", "encoder_attention_heads"), HEADS),
    **dict.fromkeys(("num_key_value_heads", "num_kv_heads", "n_kv_heads",
                     "multi_query_group_num", "num_key_value_groups"), 1),
    **dict.fromkeys(("head_dim", "attention_head_dim", "kv_channels"), HEAD_DIM),
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts",
                     "num_experts_per_layer"), 4),
    **dict.fromkeys(("num_experts_per_tok", "top_k", "moe_topk", "num_selected_experts",
                     "moe_k", "top_k_experts"), 2),
    **dict.fromkeys(("n_shared_experts", "num_shared_experts", "moe_num_shared_experts"), 1),
    **dict.fromkeys(("n_group", "topk_group"), 1),
    "first_k_dense_replace": 1,
    # multi-head latent attention (DeepSeek V2/V3, MiniCPM3)
    **dict.fromkeys(("q_lora_rank", "kv_lora_rank"), 16),
    **dict.fromkeys(("qk_rope_head_dim", "qk_nope_head_dim"), 8),
    "v_head_dim": HEAD_DIM,
    # state-space and linear-attention layers
    **dict.fromkeys(("state_size", "ssm_state_size", "mamba_d_state", "d_state"), 8),
    **dict.fromkeys(("mamba_n_heads", "linear_num_value_heads", "linear_num_key_heads"), 2),
    **dict.fromkeys(("mamba_head_dim", "mamba_d_head", "linear_key_head_dim",
                     "linear_value_head_dim"), HEAD_DIM),
    "time_step_rank": 8,
    # rotary width, per-layer embeddings (Gemma 3n/4), sparse-attention indexers (DSA)
    "rotary_dim": 8,
    "vocab_size_per_layer_input": VOCAB_SIZE,
    "hidden_size_per_layer_input": 8,
    "index_n_heads": HEADS,
    "index_head_dim": HEAD_DIM,
    "index_topk": 4,
    "n_groups": 1,
    "mamba_n_groups": 1,
    # positions
    **dict.fromkeys(("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len",
                     "seq_length"), 256),
    **dict.fromkeys(("sliding_window", "attention_window"), 16),
}

# per-layer lists whose length must equal the layer count
LAYER_LISTS = ("layer_types", "mlp_layer_types", "layers_block_type", "block_types",
               "hybrid_override_pattern", "attn_type_list", "full_attn_idxs")

SUB_CONFIGS = ("text_config", "vision_config", "audio_config", "decoder_config",
               "encoder_config")

def _settable(config, key: str) -> bool:
    """The config has `key` as a plain attribute (not a derived property)."""
    if isinstance(getattr(type(config), key, None), property):
        return False
    try:
        return hasattr(config, key)
    except Exception:  # per-layer attributes of some configs raise on global access
        return False


def _attr(config, key: str):
    return getattr(config, key, None) if _settable(config, key) else None


def _shrunk(config) -> dict:
    """The tiny values for the attributes this config has (sub-configs as dicts)."""
    values = {k: v for k, v in SIZES.items() if _settable(config, k)}
    if "qk_rope_head_dim" in values and "head_dim" in values:  # MLA: rotary part only
        values["head_dim"] = values["qk_rope_head_dim"]
    old_layers = next((_attr(config, k) for k in ("num_hidden_layers", "n_layer", "num_layers")
                       if _attr(config, k) is not None), None)
    for key in LAYER_LISTS:
        value = _attr(config, key)
        if isinstance(value, list | str) and old_layers and len(value) == old_layers:
            values[key] = value[:NUM_LAYERS]
    for key in SUB_CONFIGS:
        sub = _attr(config, key)
        if sub is not None and hasattr(sub, "to_dict"):
            values[key] = {**sub.to_dict(), **_shrunk(sub)}
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
        value = _attr(config, key)
        if isinstance(value, int) and value >= VOCAB_SIZE:
            values[key] = min(value, 3)
    return values


def tiny_config(model_type: str):
    """A tiny config of `model_type` (raises what transformers raises when it cannot)."""
    from transformers import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[model_type]
    return config_class(**_shrunk(config_class()))


# -- one type end to end: build, inspect, merge, load the child ------------------------
MAX_PARAMS = 2_000_000  # a "tiny" model above this kept a default size the helper missed
PROMPT = [[1, 5, 9, 17, 33, 65, 7, 3]]


@dataclass(frozen=True)
class Parents:
    """A tiny father, a perturbed mother, and the father's logits on PROMPT."""

    father: Path
    mother: Path
    father_logits: torch.Tensor


class CannotBuildTiny(Exception):
    """transformers cannot build, run or save this type tiny from a config alone."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:140] if text else ''}".rstrip(": ")


def logits_of(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor(PROMPT), use_cache=False).logits.float()


def build_parents(model_type: str, folder: Path, scale: float = 0.05) -> Parents:
    """Save a tiny random father and a seeded perturbed mother of `model_type`."""
    from transformers import AutoModelForCausalLM

    try:
        config = tiny_config(model_type)
        with torch.device("meta"):  # count first: a missed size can mean billions
            size = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        if size > MAX_PARAMS:
            raise CannotBuildTiny(f"the shrunk config still has {size:,} parameters")
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval()
    except CannotBuildTiny:
        raise
    except Exception as exc:
        raise CannotBuildTiny(f"no tiny model: {_first_line(exc)}") from exc
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise CannotBuildTiny("the random tiny model has NaN or Inf weights")
    try:
        logits = logits_of(model)
        model.save_pretrained(folder / "father")
    except Exception as exc:
        raise CannotBuildTiny(f"tiny model does not run or save: {_first_line(exc)}") from exc
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                spread = p.std() if p.numel() > 1 else p.abs().mean()
                p.add_(torch.randn(p.shape, generator=generator) * scale * (spread + 1e-3))
    model.save_pretrained(folder / "mother")
    return Parents(folder / "father", folder / "mother", logits)


def load_child(folder: Path):
    """The child model and the weights transformers had to initialise (should be none)."""
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    return model.eval(), info["missing_keys"]


@dataclass(frozen=True)
class TypeCheck:
    """What the registry test found for one model type."""

    model_type: str
    skipped: str = ""  # the reason, when transformers cannot build the type tiny
    components: tuple[tuple[str, int], ...] = ()
    unclassified: tuple[str, ...] = ()
    missing_in_child: tuple[str, ...] = ()
    child_finite: bool = False
    child_differs: bool = False

    @property
    def passed(self) -> bool:
        return (not self.skipped and not self.unclassified and not self.missing_in_child
                and self.child_finite and self.child_differs)


def check_type(model_type: str, folder: Path) -> TypeCheck:
    """Inspect, merge (default genome) and reload one tiny pair of `model_type`."""
    from darwin_merge.inspection import inspect_model
    from darwin_merge.merge import merge_models

    try:
        parents = build_parents(model_type, folder)
    except CannotBuildTiny as exc:
        return TypeCheck(model_type, skipped=str(exc))
    report = inspect_model(parents.father)
    child = merge_models(parents.father, parents.mother, folder / "child", progress=False)
    try:
        model, missing = load_child(child)
    except Exception as exc:
        try:
            load_child(parents.father)
        except Exception:
            return TypeCheck(model_type, skipped="transformers cannot reload its own saved "
                             f"tiny model: {_first_line(exc)}")
        raise
    logits = logits_of(model)
    return TypeCheck(model_type, components=tuple(sorted(report["components"].items())),
                     unclassified=tuple(report["unclassified"]),
                     missing_in_child=tuple(missing),
                     child_finite=bool(torch.isfinite(logits).all()),
                     child_differs=not torch.allclose(logits, parents.father_logits))


def causal_lm_types() -> list[str]:
    """Every model type of transformers' causal-LM registry, sorted."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
