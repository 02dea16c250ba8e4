"""`make demo FAMILY=gemma3` on real Gemma 3 270M with a tiny budget (its own file, so that
pytest-xdist runs it beside the SmolLM2 one in tests/test_evolve_real.py)."""

from __future__ import annotations

import json

import pytest

from darwin_merge.demo.mother import MotherRecipe
from darwin_merge.demo.run import run_demo

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_shortened_demo_on_gemma3(gemma3_real, tmp_path):
    """`make demo FAMILY=gemma3` with a tiny budget: the Gemma preset runs end to end."""
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / gemma3_real.name).symlink_to(gemma3_real.resolve())
    mother_recipe = MotherRecipe(seed=3, steps=1, batch_size=2, warmup_steps=1, lr=1e-3,
                                 first_trained_layer=17, train_embeddings=False)
    summary = run_demo("gemma3", cache=cache, out=tmp_path / "run", mother_recipe=mother_recipe,
                       trials=2, limit=3, holdout_limit=4, phase1_steps=3, top_k=1,
                       popsize=2, probe_max_tokens=12, probe_max_prompts=1, batch_size=8,
                       mri="card")  # the attribution runs on Gemma in test_scan (tiny)
    models = summary["holdout"]["models"]
    assert set(models) == {"child", "father", "mother", "dare_ties_0.5", "linear_0.5"}
    assert all(models[m]["two_digit_arithmetic"]["n"] == 4 for m in models)
    assert json.loads((tmp_path / "run" / "scan" / "scan.json").read_text())["num_layers"] == 18
    assert "| child |" in (tmp_path / "run" / "RESULTS.md").read_text()
