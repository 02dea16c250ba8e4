"""The search on the tiny two-skill pair: its child must beat both parents and the
uniform DARE-TIES baseline on held-out items (fails if the search or merge is broken).

The whole pipeline runs: scan, Phase 1 proxy, Phase 2, merge of the best genome,
health check, holdout evaluation, summary, card and report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from darwin_merge.evolve.recipe import build_recipe
from darwin_merge.evolve.run import run_evolve
from darwin_merge.records import record_json
from darwin_recipes.demo.tiny import task_paths

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def skills_run(two_skill_pair, tmp_path_factory) -> tuple[Path, dict]:
    base, father, mother = two_skill_pair
    root = tmp_path_factory.mktemp("skills-run")
    tasks = task_paths(base.parent)  # each skill's held-out words, never trained on
    fitness = {str(tasks["shift"]): 0.5, str(tasks["mirror"]): 0.5}
    recipe = build_recipe(father=father, mother=mother, base=base,
                          fitness=fitness, out=root / "run", trials=16,
                          limit=40, phase1_steps=50, top_k=4, popsize=4, probe_max_tokens=16,
                          baselines="fixed", allow_warning=True)  # as the tiny demo
    return root / "run", record_json(run_evolve(recipe))  # summary.json's content


def test_child_beats_both_parents_and_baselines(skills_run):
    _, summary = skills_run
    models = summary["holdout"]["models"]
    child = models["child"]["fitness"]
    # with a base, the base is measured too (a row and a paired comparison, as the parents)
    others = ("father", "mother", "base", "dare_ties_0.5", "linear_0.5", "task_arithmetic_l1")
    assert set(models) == {"child", *others}
    assert set(summary["holdout"]["comparisons"]) == set(models) - {"child"}
    for other in others:
        assert child > models[other]["fitness"], (other, models)
    # each parent has one skill: the child keeps some of both
    skills = [t for t in summary["holdout"]["tasks"]]
    assert all(models["child"][t]["acc"] > 0.2 for t in skills), models["child"]
    # the search keeps a healthy child, or (--allow-warning, as the tiny demo) one whose only
    # finding is interference: what it wrote says so
    run, _ = skills_run
    health = json.loads((run / "health" / "health.json").read_text())
    assert summary["health"]["verdict"] == health["verdict"] in ("healthy", "warning")
    assert health["function_loss"] == [] and health["nonfinite"]["weights"] == []


def test_run_folder_records(skills_run, two_skill_pair, tmp_path):
    """The run folder's records agree with one another, and its child is the merge of its
    best genome: `darwin merge` of best_genome.yaml with the run's scan gives the child's
    tensors to the bit. (Fails if the finish writes another candidate's child or records
    another genome than it merged.)"""
    from safetensors.torch import load_file

    from darwin_merge.cli import main

    run, summary = skills_run
    base, father, mother = two_skill_pair
    genome = yaml.safe_load((run / "best_genome.yaml").read_text())
    assert genome == summary["best"]["genome"]
    assert main(["merge", "--father", str(father), "--mother", str(mother), "--base",
                 str(base), "--genome", str(run / "best_genome.yaml"), "--scan",
                 str(run / "scan" / "scan.json"), "--out", str(tmp_path / "again")]) == 0
    child, again = (load_file(folder / "model.safetensors")
                    for folder in (run / "child", tmp_path / "again"))
    assert child.keys() == again.keys()
    assert all(torch.equal(child[name], again[name]) for name in child)
    trials = json.loads((run / "trials.json").read_text())
    assert len([t for t in trials if t["phase"] == 2]) == 16
    assert summary["phase1"]["pairs"] >= 3 and summary["phase1"]["steps"] == 50
    phase1 = json.loads((run / "phase1.json").read_text())
    assert phase1["proxy_model"] == "attribution-v3"  # the scan's attribution drives it
    assert summary["phase1"]["proxy_model"] == "attribution-v3"
    assert "| Phase 1 proxy | attribution-v3 |" in (run / "child" / "README.md").read_text()
    assert (run / "evolution.png").read_bytes()[:4] == b"\x89PNG"
    child_record = json.loads((run / "child" / "darwin_merge.json").read_text())
    assert child_record["genome_hash"] == summary["best"]["genome_hash"]
    assert (run / "child" / "README.md").is_file() and (run / "report.html").is_file()


def test_models_scored_two_at_a_time_score_as_each_does_alone(two_skill_pair):
    """The holdout's concurrent scoring: every model gets exactly the scores it gets alone
    on one thread (no skeleton or tokenizer shared between the two), in the jobs' order,
    and the torch thread count is given back."""
    import torch

    from darwin_merge.evolve.scoring import CandidateScorer, concurrency, score_concurrently
    from darwin_merge.genome import Genome
    from darwin_merge.merge.engine import ParentTensors
    from darwin_merge.merge.plan import MergeSettings

    base, father, mother = two_skill_pair
    tasks = task_paths(base.parent)
    parents = ParentTensors.load(father, mother, base)
    scorer = CandidateScorer(parents, {str(tasks["shift"]): 0.5, str(tasks["mirror"]): 0.5},
                             None, MergeSettings(), split="holdout")
    states = {"child": scorer.child_state(Genome.uniform(0.5)), "father": parents.father,
              "mother": parents.mother, "base": parents.base}
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = {name: scorer.score_state(state) for name, state in states.items()}
        torch.set_num_threads(2)
        assert concurrency(scorer, len(states)) == 2
        jobs = {name: (lambda worker, state=state: worker.score_state(state))
                for name, state in states.items()}
        at_once = score_concurrently(scorer, jobs)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert list(at_once) == list(states)
    assert at_once == alone
    assert alone["father"] != alone["mother"]  # the four models do score differently
