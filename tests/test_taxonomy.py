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


def test_rules_file_is_validated_and_compiled_once():
    from importlib import resources

    import yaml

    from darwin_merge.arch import rules

    assert rules.compiled_families() is rules.compiled_families()
    text = resources.files("darwin_merge.arch").joinpath("families.yaml").read_text()
    good = yaml.safe_load(text)
    bad_component = {**good, "common": {**good["common"], "components": [
        {"component": "mixer", "pattern": "x"}]}}
    bad_regex = {**good, "families": {**good["families"], "generic": {
        "model_types": [], "decoder_layer": "layers\\.(\\d+"}}}
    no_group = {**good, "families": {**good["families"], "generic": {
        "model_types": [], "decoder_layer": "layers\\.\\d+"}}}
    no_generic = {**good, "families": {"llama": good["families"]["llama"]}}
    for broken, where in ((bad_component, "common.components.0.component"),
                          (bad_regex, "families.generic.decoder_layer"),
                          (no_group, "families.generic.decoder_layer"),
                          (no_generic, "families")):
        with pytest.raises(ValueError, match=f"families.yaml: {where}"):
            rules.parse_rules(yaml.safe_dump(broken))


@pytest.mark.parametrize("model_type,name,component,layer", [
    ("gpt2", "transformer.h.2.attn.c_attn.weight", "attn", 2),  # fused QKV
    ("gpt2", "transformer.h.2.ln_1.weight", "norm", 2),
    ("falcon", "transformer.h.0.self_attention.query_key_value.weight", "attn", 0),
    ("gpt_neox", "gpt_neox.embed_in.weight", "embed", None),
    ("qwen3_next", "model.layers.1.linear_attn.in_proj_qkvz.weight", "attn", 1),  # linear attn
    ("mamba", "backbone.layers.1.mixer.A_log", "attn", 1),  # state space
    ("jamba", "model.layers.0.mamba.x_proj.weight", "attn", 0),
    ("deepseek_v3", "model.layers.1.self_attn.kv_a_proj_with_mqa.weight", "attn", 1),  # MLA
    ("deepseek_v3", "model.layers.1.mlp.shared_experts.up_proj.weight", "moe", 1),
    ("nemotron_h", "model.layers.3.mixer.up_proj.weight", "ffn", 3),  # a one-type rule ...
    ("mamba", "model.layers.3.mixer.up_proj.weight", "attn", 3),  # ... not applied elsewhere
    ("bert", "bert.encoder.layer.1.intermediate.dense.weight", "ffn", 1),
])
def test_mapped_layers(model_type, name, component, layer):
    info = Taxonomy({"model_type": model_type, "num_hidden_layers": 4}).classify(name)
    assert (info.component, info.layer) == (component, layer)
