"""The tuned baselines of a finished `darwin evolve` run, chosen again with this checkout's
code: the same parents, recipe and search items, a fresh study holding only the run's
parent scores (the guards' references), so every point is merged, raced, guarded and
health-checked anew. Prints the wall time, the seconds of merges, evaluations and guards
summed over the points, the choices, and how many points got the run's fitness to the
last digit (the rule changed nothing) or not.

    .venv/bin/python bench/bench_baselines.py runs/demo-smollm2

The run folder's recipe.yaml names the parents; its study.db holds the points it scored.
The parents are measured on the health probes once before the clock starts (a real run
has done so for its child's check already).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path

import optuna
import yaml

from darwin_merge.evolve import baselines
from darwin_merge.evolve.gate import measured_parents
from darwin_merge.evolve.recipe import Recipe
from darwin_merge.evolve.scoring import CandidateScorer
from darwin_merge.merge.engine import ParentTensors
from darwin_merge.merge.plan import MergeSettings
from darwin_merge.records import file_names


def recorded_attributes(run: Path) -> dict:
    """The run study's user attributes (its parent scores and baseline points)."""
    with sqlite3.connect(run / "study.db") as db:
        rows = db.execute("select key, value_json from study_user_attributes").fetchall()
    return {key: json.loads(value) for key, value in rows}


def run_scorer(run: Path) -> tuple[Recipe, CandidateScorer]:
    """A finished run's recipe and a scorer of its parents on its search items, the parents
    measured on the health probes (as the run had them)."""
    recipe = Recipe(**yaml.safe_load((run / file_names.RECIPE).read_text()))
    parents = ParentTensors.load(recipe.father, recipe.mother, recipe.base,
                                 device=recipe.device, dtype=recipe.dtype)
    scorer = CandidateScorer(parents, recipe.weights, None, MergeSettings(), split="search",
                             limit=recipe.limit, batch_size=recipe.batch_size,
                             device=recipe.device, dtype=recipe.forward_dtype,
                             guard_tasks=tuple(recipe.guard))
    measured_parents(recipe)
    return recipe, scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder (recipe.yaml, study.db)")
    args = parser.parse_args()
    recorded = recorded_attributes(args.run)
    recipe, scorer = run_scorer(args.run)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("parent_search_scores", recorded["parent_search_scores"])
    started = time.perf_counter()
    chosen = baselines.run_baselines(recipe, scorer, study).record
    wall = time.perf_counter() - started
    points = study.user_attrs[baselines.POINTS_ATTR]
    sums: dict[str, float] = {}
    for point in points.values():
        for stage, seconds in point["seconds"].items():
            sums[stage] = sums.get(stage, 0.0) + seconds
    before = recorded.get(baselines.POINTS_ATTR, {})
    same = [n for n, p in points.items() if n in before and
            baselines.fitness_of_point(p) == baselines.fitness_of_point(before[n])]
    print(f"tuned baselines: {wall:.1f} s wall; summed over the points: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in sums.items()))
    print(f"points guarded: {sum('guard' in p for p in points.values())} (twins share one); "
          f"best {chosen.chosen}; "
          f"best healthy {chosen.healthy}")
    print(f"points with the run's fitness to the last digit: {len(same)} of {len(points)}")


if __name__ == "__main__":
    main()
