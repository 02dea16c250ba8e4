"""The memory plan: each command's peak added up before work starts, refused in one line
when it will not fit (the measured peaks are in docs/BENCHMARKS.md, "Memory plan")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import darwin_merge.memory_plan as memory_plan
import darwin_merge.resources as resources
from darwin_merge.cli import main
from darwin_merge.errors import ResourceError
from darwin_merge.evolve.recipe import build_recipe
from darwin_merge.memory_plan import RUNTIME_BYTES, evolve_plan, health_plan, model_shape
from tiny_models import make_tiny, perturbed_copy


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("plan")
    father = make_tiny("llama", root / "father", seed=0)
    return father, perturbed_copy(father, root / "mother", scale=0.1, seed=2)


def weight_bytes(folder: Path, dtype: torch.dtype | None = None) -> int:
    """Bytes of the tensors as really loaded (optionally cast), for comparison."""
    tensors = load_file(str(folder / "model.safetensors"))
    return sum(t.numel() * (t.element_size() if dtype is None or not t.is_floating_point()
                            else torch.finfo(dtype).bits // 8) for t in tensors.values())


def only_free(monkeypatch, cpu: int, cuda: int | None = None) -> None:
    def free(device):
        return cpu if device.type == "cpu" else cuda

    monkeypatch.setattr(resources, "available_memory", free)


def test_plans_count_every_model_copy_at_the_requested_dtype(pair):
    father, mother = pair
    model = weight_bytes(father)
    assert model_shape(father, "float32").nbytes == model
    assert model_shape(father, "bfloat16").nbytes == weight_bytes(father, torch.bfloat16)
    recipe = build_recipe(father=father, mother=mother, fitness={"arc_easy": 1.0},
                          out=father.parent / "run")
    parts = dict(evolve_plan(recipe).parts)
    # held: 2 parents + the scorer's model; at the end 3 more (health check or states)
    assert parts["parents (2 models)"] == 2 * model
    assert parts["the scorer's model"] == model
    assert parts["health check or child and baselines (3 models)"] == 3 * model
    # the tuned baselines (the default) keep one float32 model of merged task vectors
    assert parts["the tuned baselines' task vectors (float32)"] == model
    fixed = dict(evolve_plan(recipe.model_copy(update={"baselines": "fixed"})).parts)
    assert "the tuned baselines' task vectors (float32)" not in fixed
    plan = health_plan(father, father, mother)
    assert dict(plan.parts)["child, father and mother"] == 3 * model
    assert plan.total == 3 * model + dict(plan.parts)["traced forward passes"] + RUNTIME_BYTES


def test_the_parents_probe_states_kept_for_health_checks_are_planned(pair, monkeypatch):
    """The search's health checks keep both parents' probe states (evolve/gate.py): the plan
    counts what a real reference holds (every prompt at most max_tokens long), and above
    PARENT_STATES_MAX_BYTES nothing is kept (each check runs the parents again)."""
    from darwin_merge import memory_plan
    from darwin_merge.evolve.gate import measured_parents

    father, mother = pair
    recipe = build_recipe(father=father, mother=mother, fitness={"arc_easy": 1.0},
                          out=father.parent / "run", probe_max_prompts=3, probe_max_tokens=24)
    planned = dict(evolve_plan(recipe).parts)["the parents' probe states (health checks)"]
    reference = measured_parents(recipe)
    held = sum(state.numel() * state.element_size() for batches in reference.batches.values()
               for batch in batches for states in batch.states.values() for state in states)
    assert planned / 2 < held <= planned
    assert measured_parents(recipe) is reference  # measured once
    monkeypatch.setattr(memory_plan, "PARENT_STATES_MAX_BYTES", held - 1)
    assert measured_parents(recipe) is None
    assert "the parents' probe states (health checks)" not in dict(evolve_plan(recipe).parts)


def test_evolve_refused_before_anything_is_created_when_the_plan_does_not_fit(
        pair, tmp_path, capsys, monkeypatch):
    father, mother = pair
    only_free(monkeypatch, cpu=RUNTIME_BYTES)  # room for Python only
    code = main(["evolve", "--father", str(father), "--mother", str(mother), "--fitness",
                 "arc_easy=1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == ResourceError.exit_code and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("darwin")]
    assert len(lines) == 1 and "`darwin evolve`" in lines[0] and "need about" in lines[0]
    assert "parents (2 models)" in lines[0] and "only 550.0 MB available" in lines[0]
    assert not (tmp_path / "run").exists()


def test_health_refused_with_one_line_saying_how_much(pair, tmp_path, capsys, monkeypatch):
    father, mother = pair
    plan = health_plan(father, father, mother)
    only_free(monkeypatch, cpu=plan.total - 1)
    code = main(["health", "--child", str(father), "--father", str(father), "--mother",
                 str(mother), "--out", str(tmp_path / "h")])
    line = capsys.readouterr().err.strip()
    assert code == ResourceError.exit_code and "\n" not in line
    assert f"need about {resources.human_bytes(plan.total)}" in line
    assert not (tmp_path / "h").exists()
    only_free(monkeypatch, cpu=plan.total)  # exactly enough: the check runs
    assert main(["health", "--child", str(father), "--father", str(father), "--mother",
                 str(mother), "--max-prompts", "1", "--max-tokens", "8"]) == 0


def test_cuda_plan_checks_gpu_and_host(pair, monkeypatch):
    father, mother = pair
    monkeypatch.setattr(memory_plan, "resolve_device", lambda name: torch.device(name))
    plan = health_plan(father, father, mother, device="cuda")
    only_free(monkeypatch, cpu=10**12, cuda=plan.device_bytes - 1)
    with pytest.raises(ResourceError, match="of cuda memory"):
        plan.check()
    only_free(monkeypatch, cpu=RUNTIME_BYTES, cuda=10**12)  # the GPU fits, the host not
    with pytest.raises(ResourceError, match="on the host .* of cpu memory"):
        plan.check()
    only_free(monkeypatch, cpu=10**12, cuda=plan.device_bytes)
    plan.check()
