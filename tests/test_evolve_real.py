"""The demo's whole pipeline on real SmolLM2-135M with a tiny budget: mother fine-tune (two
steps), scan, both phases, merge, health, holdout table, summary, card, report, RESULTS.md."""

from __future__ import annotations

import json

import pytest
import yaml

from darwin_merge.demo.mother import MotherRecipe
from darwin_merge.demo.run import PRESETS, run_demo

pytestmark = [pytest.mark.real, pytest.mark.slow]

TINY_MOTHER = MotherRecipe(seed=3, steps=2, batch_size=4, warmup_steps=1, lr=1e-3,
                           first_trained_layer=27)


def test_shortened_demo_on_smollm2(smollm2, tmp_path):
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / smollm2.name).symlink_to(smollm2.resolve())  # the father, reused
    run = tmp_path / "run"
    summary = run_demo("smollm2", cache=cache, out=run, mother_recipe=TINY_MOTHER,
                       trials=3, limit=4, holdout_limit=6, fitness_holdout_limit=6,
                       phase1_steps=5, top_k=2, popsize=2, probe_max_tokens=16,
                       probe_max_prompts=2, batch_size=8, scan_items=4)
    mother = cache / "models" / f"{smollm2.name}-arith-{TINY_MOTHER.hash8(smollm2)}"
    assert json.loads((mother / "darwin_mother.json").read_text())["recipe"]["steps"] == 2
    models = summary["holdout"]["models"]
    assert set(models) == {"child", "father", "mother", "dare_ties_0.5", "linear_0.5"}
    tasks = summary["holdout"]["tasks"]
    assert {t for t, v in tasks.items() if v["role"] == "fitness"} == set(
        PRESETS["smollm2"]["fitness"])
    assert {t for t, v in tasks.items() if v["role"] == "extra"} == set(
        PRESETS["smollm2"]["extra_tasks"])
    assert all(models[m]["arc_easy"]["n"] == 6 for m in models)
    # the search keeps only a healthy child (no --allow-warning): what it wrote says so
    health = json.loads((run / "health" / "health.json").read_text())
    assert summary["health"]["verdict"] == health["verdict"] == "healthy"
    assert health["flagged_layers"] == [] and health["function_loss"] == []
    assert yaml.safe_load((run / "best_genome.yaml").read_text()) == summary["best"]["genome"]
    assert json.loads((run / "scan" / "scan.json").read_text())["num_layers"] == 30
    card = (run / "child" / "README.md").read_text()
    assert summary["best"]["genome_hash"] in card
    assert (run / "report.html").stat().st_size > 10_000
    results = (run / "RESULTS.md").read_text()
    assert all(f"| {name} |" in results for name in models)
    assert "two_digit_arithmetic (fitness, n=6)" in results
    # a second call finds the finished run and returns its summary without work
    assert run_demo("smollm2", cache=cache, out=run, mother_recipe=TINY_MOTHER) == summary
    from transformers import AutoModelForCausalLM

    child = AutoModelForCausalLM.from_pretrained(run / "child")
    assert child.config.num_hidden_layers == 30
