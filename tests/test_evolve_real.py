"""`make demo` (the specialists pair) on real SmolLM2-135M with a tiny budget: the two
fine-tunes (two steps each), scan, both phases, merge, health, holdout table with the base
and the guards, summary, card, report, RESULTS.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from darwin_merge.records import record_json
from darwin_recipes.demo.mother import recipe_with
from darwin_recipes.demo.run import SPECIALISTS_PRESET, run_demo

pytestmark = [pytest.mark.real, pytest.mark.slow]

# The pair's recipes (skills, halves of the blocks), shortened to two steps of 4 problems.
SHORT = {"steps": 2, "batch_size": 4, "warmup_steps": 1, "seed": 3}
TINY_FINE_TUNES = {"father": recipe_with(last_trained_layer=1, train_embeddings=False, **SHORT),
                   "mother": recipe_with(skill="letter_reversal", first_trained_layer=28,
                                         train_embeddings=False, **SHORT)}


def test_shortened_demo_on_smollm2(smollm2, tmp_path):
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / smollm2.name).symlink_to(smollm2.resolve())  # the base, reused
    run = tmp_path / "run"
    summary = record_json(run_demo(  # summary.json's content
        "smollm2", cache=cache, out=run, fine_tunes=TINY_FINE_TUNES, trials=3, limit=4,
        holdout_limit=6, fitness_holdout_limit=6, phase1_steps=5, top_k=2, popsize=2,
        probe_max_tokens=16, probe_max_prompts=2, batch_size=8, scan_items=4,
        baselines="fixed"))  # tuned: 5 more minutes here (tiny demo tests it)
    for role, tag in (("father", "arith"), ("mother", "rev")):
        recipe = TINY_FINE_TUNES[role]
        folder = cache / "models" / f"{smollm2.name}-{tag}-{recipe.hash8(smollm2)}"
        assert Path(summary[role]).name == folder.name
        assert json.loads((folder / "darwin_mother.json").read_text())["recipe"]["steps"] == 2
    assert Path(summary["base"]).name == smollm2.name
    models = summary["holdout"]["models"]
    assert summary["baseline_search"]["mode"] == "fixed"
    assert set(models) == {"child", "father", "mother", "base", "dare_ties_0.5", "linear_0.5",
                           "task_arithmetic_l1"}
    tasks = summary["holdout"]["tasks"]
    roles = {role: {t for t, v in tasks.items() if v["role"] == role}
             for role in ("fitness", "guard", "extra")}
    assert roles == {"fitness": set(SPECIALISTS_PRESET["fitness"]),
                     "guard": set(SPECIALISTS_PRESET["guard"]),
                     "extra": set(SPECIALISTS_PRESET["extra_tasks"])}
    assert set(summary["guard"]) == set(SPECIALISTS_PRESET["guard"])
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
    assert "two_digit_arithmetic (fitness, acc, n=6)" in results
    # the command line says the pair's fine-tunes were changed (by the folders they make)
    assert 'Command: `make demo DEMO_ARGS="--trials 3 --limit 4 --holdout-limit 6"`' in results
    assert all(f"{role}={Path(summary[role]).name}" in results for role in TINY_FINE_TUNES)
    # a second call finds the finished run and returns its summary without work
    assert record_json(run_demo("smollm2", cache=cache, out=run,
                                fine_tunes=TINY_FINE_TUNES)) == summary
    from transformers import AutoModelForCausalLM

    child = AutoModelForCausalLM.from_pretrained(run / "child")
    assert child.config.num_hidden_layers == 30
