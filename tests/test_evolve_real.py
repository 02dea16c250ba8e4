"""A shortened real pipeline on SmolLM2-135M: scan, both phases, merge, health, holdout,
summary, card and report, with a tiny budget (the mother: a perturbed copy)."""

from __future__ import annotations

import json

import pytest
import yaml

from darwin_merge.evolve.recipe import build_recipe
from darwin_merge.evolve.run import run_evolve
from tiny_models import perturbed_copy

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_shortened_pipeline_on_smollm2(smollm2, tmp_path):
    mother = perturbed_copy(smollm2, tmp_path / "mother", scale=0.05, seed=3)
    recipe = build_recipe(father=smollm2, mother=mother, out=tmp_path / "run",
                          fitness={"arc_easy": 0.5, "simple_arithmetic": 0.5},
                          extra_tasks=["piqa"], trials=3, limit=4, holdout_limit=6,
                          phase1_steps=5, top_k=2, popsize=2, probe_max_tokens=16,
                          probe_max_prompts=2, batch_size=8)
    summary = run_evolve(recipe)
    run = tmp_path / "run"
    models = summary["holdout"]["models"]
    assert set(models) == {"child", "father", "mother", "dare_ties_0.5", "linear_0.5"}
    assert summary["holdout"]["tasks"]["piqa"]["role"] == "extra"
    assert all(models[m]["arc_easy"]["n"] == 6 for m in models)
    assert summary["health"]["verdict"] in ("healthy", "warning", "unhealthy")
    assert yaml.safe_load((run / "best_genome.yaml").read_text()) == summary["best"]["genome"]
    assert json.loads((run / "scan" / "scan.json").read_text())["num_layers"] == 30
    card = (run / "child" / "README.md").read_text()
    assert summary["best"]["genome_hash"] in card
    assert (run / "report.html").stat().st_size > 10_000
    from transformers import AutoModelForCausalLM

    child = AutoModelForCausalLM.from_pretrained(run / "child")
    assert child.config.num_hidden_layers == 30
