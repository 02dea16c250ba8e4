"""`make demo FAMILY=gemma3 PAIR=father-mother` on real Gemma 3 270M with a tiny budget (its
own file, so that pytest-xdist runs it beside the SmolLM2 one in tests/test_evolve_real.py)."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from darwin_merge.merge.plan import plan_models
from darwin_merge.records import record_json
from darwin_recipes.demo.mother import MotherRecipe
from darwin_recipes.demo.run import run_demo

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_shortened_demo_on_gemma3(gemma3_real, tmp_path):
    """`make demo FAMILY=gemma3 PAIR=father-mother` with a tiny budget: the Gemma preset
    runs end to end (the SmolLM2 test runs the specialists pair)."""
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / gemma3_real.name).symlink_to(gemma3_real.resolve())
    mother_recipe = MotherRecipe(seed=3, steps=1, batch_size=2, warmup_steps=1, lr=1e-3,
                                 first_trained_layer=17, train_embeddings=False)
    summary = record_json(run_demo(  # summary.json's content
        "gemma3", cache=cache, out=tmp_path / "run", pair="father-mother",
        fine_tunes={"mother": mother_recipe}, trials=2, limit=3, holdout_limit=4,
        fitness_holdout_limit=4, phase1_steps=3, top_k=1, popsize=2, probe_max_tokens=12,
        probe_max_prompts=1, batch_size=8, baselines="fixed",
        mri="card"))  # the attribution runs on Gemma in test_scan (tiny)
    models = summary["holdout"]["models"]
    assert set(models) == {"child", "father", "mother", "dare_ties_0.5", "linear_0.5",
                           "task_arithmetic_l1"}
    assert all(models[m]["two_digit_arithmetic"]["n"] == 4 for m in models)
    assert json.loads((tmp_path / "run" / "scan" / "scan.json").read_text())["num_layers"] == 18
    assert "| child |" in (tmp_path / "run" / "RESULTS.md").read_text()
    # What is Gemma's in the child: its sliding-window and global layers, the attention
    # scale and the tied head (one table, scaled by the model's code) come through as-is.
    father_config = json.loads((gemma3_real / "config.json").read_text())
    child_config = json.loads((tmp_path / "run" / "child" / "config.json").read_text())
    for key in ("layer_types", "sliding_window", "query_pre_attn_scalar", "tie_word_embeddings",
                "rope_parameters", "hidden_activation"):
        assert child_config[key] == father_config[key], key
    with safe_open(tmp_path / "run" / "child" / "model.safetensors", "pt") as child:
        names = set(child.keys())
    with safe_open(gemma3_real / "model.safetensors", "pt") as father:
        assert names == set(father.keys())  # no lm_head added, none dropped
    assert not any("lm_head" in n for n in names)


def test_gemma3_real_tensors_follow_the_genome_fields_docs_merge_says(gemma3_real):
    """Real Gemma 3 names: q/k norms and the four norms of a layer are norms (not attention
    or MLP), the 18 layers fall in the genome's 6 blocks three by three, and the tied
    embedding table is the only embed tensor."""
    rows = plan_models(gemma3_real, gemma3_real)
    by_name = {r.name: r for r in rows}
    for part in ("self_attn.q_norm", "self_attn.k_norm", "input_layernorm",
                 "post_attention_layernorm", "pre_feedforward_layernorm",
                 "post_feedforward_layernorm"):
        assert by_name[f"model.layers.7.{part}.weight"].component == "norm", part
    assert by_name["model.layers.7.self_attn.q_proj.weight"].component == "attn"
    assert by_name["model.layers.7.mlp.gate_proj.weight"].component == "ffn"
    assert {r.layer: r.block for r in rows if r.layer is not None} == {
        layer: layer // 3 for layer in range(18)}
    assert [r.name for r in rows if r.component == "embed"] == ["model.embed_tokens.weight"]
    assert len(rows) == 236 and not any(r.component == "other" for r in rows)
