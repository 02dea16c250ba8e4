"""Peak RSS of `darwin health` and of a tiny `darwin evolve` on SmolLM2-135M, against
their memory plans (darwin_merge.memory_plan). Target (issue 18): within 20%.

    .venv/bin/python bench/bench_memory.py [--father DIR] [--work DIR] [--skip-evolve]

Each command runs as a child process with one torch thread; its peak RSS comes from
the kernel (`os.wait4`'s ru_maxrss). The mother is a perturbed copy of the father
written once under WORK (as bench_evolve.py does).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from darwin_merge.evolve.recipe import load_recipe  # noqa: E402
from darwin_merge.memory_plan import evolve_plan, health_plan  # noqa: E402

EVOLVE = {"fitness": {"simple_arithmetic": 0.5, "arc_easy": 0.5}, "trials": 2, "limit": 8,
          "holdout_limit": 8, "phase1_steps": 5, "top_k": 1, "popsize": 2,
          "probe_max_prompts": 2, "probe_max_tokens": 32, "allow_warning": True}


def peak_rss(args: list[str]) -> tuple[int, float, int]:
    """(peak RSS in bytes, seconds, exit code) of `darwin ARGS` in a child process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "darwin_merge.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.read().decode()[-2000:])
    return usage.ru_maxrss * 1024, time.perf_counter() - started, proc.returncode


def row(name: str, plan, measured: tuple[int, float, int]) -> dict:
    rss, seconds, code = measured
    return {"command": name, "exit": code, "seconds": round(seconds, 1),
            "plan_bytes": plan.total, "peak_rss_bytes": rss,
            "rss_over_plan": round(rss / plan.total, 3), "plan": plan.describe()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--father", type=Path, default=Path(".cache/models/smollm2-135m-instruct"))
    parser.add_argument("--work", type=Path, default=Path(".cache/bench/memory"))
    parser.add_argument("--skip-evolve", action="store_true")
    args = parser.parse_args()
    father = args.father
    mother = args.work / "smollm2-perturbed"
    if not (mother / "config.json").is_file():
        from tiny_models import perturbed_copy

        perturbed_copy(father, mother, scale=0.05, seed=3)
    rows = []
    plan = health_plan(father, father, mother, max_tokens=64, batch_size=8)
    rows.append(row("health", plan, peak_rss(
        ["health", "--child", str(father), "--father", str(father), "--mother", str(mother),
         "--max-prompts", "8", "--max-tokens", "64", "--batch-size", "8"])))
    print(json.dumps(rows[-1]), flush=True)  # each as soon as measured
    if not args.skip_evolve:
        run = args.work / "evolve-run"
        recipe_file = args.work / "recipe.yaml"
        recipe_file.write_text(yaml.safe_dump({**EVOLVE, "father": str(father),
                                               "mother": str(mother), "out": str(run)}))
        plan = evolve_plan(load_recipe(recipe_file))
        if run.exists():
            import shutil

            shutil.rmtree(run)
        rows.append(row("evolve", plan, peak_rss(["evolve", "--recipe", str(recipe_file)])))
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
