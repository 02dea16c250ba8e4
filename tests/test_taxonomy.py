"""The taxonomy classifies every tensor of every tiny family, with counts matching configs."""

from __future__ import annotations

from collections import Counter

import pytest

from darwin_merge.arch import Taxonomy, block_of
from darwin_merge.inspection import inspect_model
from darwin_merge.io import ModelSource
from tiny_models import config_dict


def test_block_of_is_adaptive():
    assert [block_of(i, 30) for i in range(30)] == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5 \
        + [4] * 5 + [5] * 5
    assert [block_of(i, 26) for i in range(26)] == [0] * 5 + [1] * 4 + [2] * 4 + [3] * 5 \
        + [4] * 4 + [5] * 4
    assert [block_of(i, 4) for i in range(4)] == [0, 1, 3, 4]
    assert block_of(5, 6) == 5 and block_of(0, 1) == 0


def test_every_tensor_classified(tiny_model):
    family, folder = tiny_model
    report = inspect_model(folder)
    assert report["unclassified"] == [], report["unclassified"]
    assert report["num_layers"] == 4
    counts = Counter(t["component"] for t in report["tensors"])
    layers = {t["layer"] for t in report["tensors"] if t["layer"] is not None}
    assert layers == {0, 1, 2, 3}
    # attention: q,k,v,o in each of the 4 decoder layers (+ q/k norms in Gemma are norms)
    dec_attn = [t for t in report["tensors"] if t["component"] == "attn" and t["layer"] is not None]
    cfg = config_dict(folder)
    shared_kv = (cfg.get("text_config") or {}).get("num_kv_shared_layers", 0)
    assert len(dec_attn) == 4 * 4 - 2 * shared_kv  # shared-KV layers have no k/v projections
    # feed-forward: gate, up, down per layer
    dec_ffn = [t for t in report["tensors"] if t["component"] == "ffn" and t["layer"] is not None]
    assert len(dec_ffn) == 4 * 3
    if family.startswith("gemma4"):
        assert counts["vision"] > 0 and counts["audio"] > 0
        assert counts["per_layer_embed"] == 3 + 4 * 3  # 3 model-level + gate/proj/norm per layer
    else:
        assert counts["vision"] == 0 and counts["audio"] == 0
    if family == "gemma4_moe":
        assert counts["moe"] == 4 * 5  # router proj/scale/per_expert_scale + 2 expert tensors
    else:
        assert counts["moe"] == 0


def test_gemma4_clip_buffers_and_scalars_have_their_own_merge_kind(tiny_dir):
    from tiny_models import make_tiny

    folder = make_tiny("gemma4", tiny_dir / "g4-kinds")
    report = inspect_model(folder)
    kinds = {t["name"]: t["merge_kind"] for t in report["tensors"]}
    assert all(k == "clip_min" for n, k in kinds.items() if n.endswith(("input_min", "output_min")))
    assert all(k == "clip_max" for n, k in kinds.items() if n.endswith(("input_max", "output_max")))
    assert kinds["model.language_model.layers.0.layer_scalar"] == "linear"
    assert kinds["model.language_model.layers.0.self_attn.q_proj.weight"] == "dare_ties"


def test_unknown_tensor_is_other_not_dropped():
    tax = Taxonomy({"model_type": "llama", "num_hidden_layers": 30})
    info = tax.classify("model.layers.7.mystery.weight", (4, 4))
    assert info.component == "other" and info.layer == 7 and info.block == 1
    assert tax.classify("model.embed_tokens.weight", (10, 4)).component == "embed"
    assert tax.classify("lm_head.weight", (10, 4)).block is None


@pytest.mark.parametrize("name,component", [
    ("model.layers.3.self_attn.q_proj.weight", "attn"),
    ("model.layers.3.mlp.down_proj.weight", "ffn"),
    ("model.layers.3.input_layernorm.weight", "norm"),
    ("model.norm.weight", "norm"),
])
def test_llama_names(name, component):
    taxonomy = Taxonomy({"model_type": "llama", "num_hidden_layers": 4})
    assert taxonomy.classify(name).component == component


def test_sharded_and_single_agree(tiny_dir):
    from tiny_models import make_tiny

    single = make_tiny("llama", tiny_dir / "single", seed=3)
    sharded = make_tiny("llama", tiny_dir / "sharded", seed=3, sharded=True)
    assert (sharded / "model.safetensors.index.json").is_file()
    with ModelSource(single) as a, ModelSource(sharded) as b:
        assert a.names == b.names
        for n in a.names:
            assert a.get(n).equal(b.get(n))
    assert config_dict(single)["num_hidden_layers"] == 4
