"""Shared fixtures: tiny models of every family, and the real models when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tiny_models import make_tiny

# Under pytest-xdist each worker takes one core; alone, the suite takes up to two.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

# Tests never download: a Hub id resolves offline, from a cache a test builds (hub_cache).
os.environ["HF_HUB_OFFLINE"] = "1"

FAMILIES = ("llama", "gemma3", "gemma4", "gemma4_moe")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# `make test` installs the [lm-eval] extra and sets DARWIN_REQUIRE_LM_EVAL=1: there a test
# skipped because lm-eval (or its `datasets`) does not import fails instead, so a missing
# install step cannot hide behind a skip. Elsewhere such a test is skipped.
REQUIRE_LM_EVAL = os.environ.get("DARWIN_REQUIRE_LM_EVAL") == "1"
LM_EVAL_SKIPS = ("could not import 'lm_eval", "could not import 'datasets'")  # importorskip's


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if REQUIRE_LM_EVAL and report.skipped and call.excinfo is not None:
        message = str(call.excinfo.value)
        if message.startswith(LM_EVAL_SKIPS):
            report.outcome = "failed"
            report.longrepr = f"DARWIN_REQUIRE_LM_EVAL=1 (make test), yet {message}"
    return report


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session", params=FAMILIES)
def tiny_model(request, tiny_dir) -> tuple[str, Path]:
    """(family, folder) for each tiny family, single-file safetensors."""
    family = request.param
    return family, make_tiny(family, tiny_dir / family)


@pytest.fixture(scope="session")
def tiny_trio(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(base, a, b): a tiny Llama and two fine-tunes of it (seeded perturbations)."""
    from tiny_models import perturbed_copy

    root = tmp_path_factory.mktemp("trio")
    base = make_tiny("llama", root / "base", seed=0)
    return (base, perturbed_copy(base, root / "a", scale=0.3, seed=1),
            perturbed_copy(base, root / "b", scale=0.3, seed=2))


@pytest.fixture(scope="session")
def tiny_llama(tiny_dir) -> Path:
    return make_tiny("llama", tiny_dir / "llama-a", seed=0)


def _cache() -> Path:
    return Path(os.environ.get("DARWIN_CACHE", Path(__file__).resolve().parents[1] / ".cache"))


def _real(name: str) -> Path:
    from darwin_merge.realmodels import ensure_real_model

    return ensure_real_model(name, _cache())


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The imported SmolLM2-135M-Instruct folder (imported once into the cache)."""
    return _real("smollm2")


@pytest.fixture(scope="session")
def gemma3_real() -> Path:
    """The imported Gemma 3 270M folder (imported once into the cache)."""
    return _real("gemma3")


@pytest.fixture(scope="session")
def two_skill_pair(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(base, father, mother) tiny Llama folders: father knows skill A, mother skill B,
    as the tiny demo makes them (their task files lie in `base.parent / "tasks"`).

    Score any model or folder with `skills.skill_scores` (see tests/skills.py).
    """
    from darwin_recipes.demo.tiny import prepare_tiny_pair

    folder = prepare_tiny_pair(tmp_path_factory.mktemp("two-skill"))
    return folder / "base", folder / "father", folder / "mother"


@pytest.fixture
def one_thread():
    """One torch thread for a test: on a shared, loaded 2-core machine OpenMP barriers
    cost more than they give (the scan and health tests ran 20x faster so)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


LICENSE_README = "---\nlicense: apache-2.0\nlanguage: [en]\n---\n# a tiny parent\n"


@pytest.fixture(scope="session")
def evolved_run(tmp_path_factory) -> dict:
    """A tiny `darwin evolve`, start to finish, run once per session: the card and report
    tests read the records the search really writes (summary, trials, health, scan,
    evolution picture, child). {run, child, father, mother, summary, merge}."""
    import json

    from darwin_merge.evolve.recipe import build_recipe
    from darwin_merge.evolve.run import run_evolve
    from darwin_merge.records import record_json
    from tiny_models import perturbed_copy

    root = tmp_path_factory.mktemp("evolved")
    father = make_tiny("llama", root / "father", seed=0)
    mother = perturbed_copy(father, root / "mother", scale=0.05, seed=3)
    for parent in (father, mother):
        (parent / "README.md").write_text(LICENSE_README)
    recipe = build_recipe(father=father, mother=mother, out=root / "run",
                          fitness={"arc_easy": 0.5, "simple_arithmetic": 0.5},
                          extra_tasks=["arc_challenge"], trials=4, limit=4, holdout_limit=6,
                          phase1_steps=10, top_k=2, popsize=2, probe_max_tokens=16,
                          probe_max_prompts=2, allow_warning=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = record_json(run_evolve(recipe))  # summary.json's content
    finally:
        torch.set_num_threads(threads)
    run = root / "run"
    merge = json.loads((run / "child" / "darwin_merge.json").read_text())
    return {"run": run, "child": run / "child", "father": father, "mother": mother,
            "summary": summary, "merge": merge}
