"""The tuned baselines' health checks, whole against verdict-only, on a finished run.

    .venv/bin/python bench/bench_baseline_health.py runs/demo-smollm2 [--rounds 2]

Every baseline the run health-checked (the study's verdicts: each recipe's best points and
the fixed baselines) is merged again in memory and checked both ways in turn: the whole
check, and `stop_when_unhealthy=True` (what `evolve/baselines.health_of` runs: it stops at
the first probe set with a function loss). Prints each one's seconds both ways (best of
`--rounds`), the totals and their ratio, and fails if a verdict differs from the run's.
The parents are measured on the probes once before the clock starts, as in a run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench_baselines import recorded_attributes, run_scorer  # this folder's bench

from darwin_merge.evolve import baselines
from darwin_merge.evolve.gate import child_health
from darwin_merge.evolve.recipe import Recipe
from darwin_merge.evolve.scoring import CandidateScorer
from darwin_merge.mergekit.standard import StandardRecipe


def candidates(attributes: dict) -> dict:
    """Each health-checked baseline's recipe (a Genome or a StandardRecipe) and verdict."""
    points = attributes.get(baselines.POINTS_ATTR, {})
    fixed = {**baselines.FIXED_GENOMES, **{r.name: r for r in baselines.FIXED_RECIPES}}
    found = {}
    for name, verdict in attributes.get(baselines.HEALTH_ATTR, {}).items():
        recipe = fixed.get(name) or StandardRecipe(**points[name]["recipe"])
        found[name] = (recipe, verdict)
    return found


def seconds_of(recipe: Recipe, scorer: CandidateScorer, stop: bool) -> tuple[float, str]:
    started = time.perf_counter()
    report = child_health(recipe, scorer.model, tokenizer=scorer.tokenizer,
                          stop_when_unhealthy=stop)
    return time.perf_counter() - started, report["verdict"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder (recipe.yaml, study.db)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    recipe, scorer = run_scorer(args.run)
    totals = {"whole": 0.0, "verdict only": 0.0}
    checked = candidates(recorded_attributes(args.run))
    for name, (candidate, verdict) in checked.items():
        scorer.load(scorer.state_of(candidate))
        best = {}
        for _ in range(args.rounds):
            for label, stop in (("whole", False), ("verdict only", True)):
                seconds, found = seconds_of(recipe, scorer, stop)
                if found != verdict:
                    raise SystemExit(f"{name}: {label} check says {found}, the run {verdict}")
                best[label] = min(best.get(label, seconds), seconds)
        for label, seconds in best.items():
            totals[label] += seconds
        print(f"{name} ({verdict}): whole {best['whole']:.1f} s, verdict only "
              f"{best['verdict only']:.1f} s")
    print(f"all {len(checked)} checks: whole {totals['whole']:.1f} s, "
          f"verdict only {totals['verdict only']:.1f} s "
          f"({totals['whole'] / totals['verdict only']:.1f}x)")


if __name__ == "__main__":
    main()
