"""Evolve's hot path on SmolLM2-135M: in-memory candidate merge vs that candidate's
evaluation (default demo fitness), the Phase 1 proxy's wall time, and candidates per
hour today (every candidate on every item) vs racing (evolve/racing.py), in one run.

    .venv/bin/python bench/bench_evolve.py [--mother DIR] [--limit 40] [--candidates 3]
        [--race-candidates 12] [--tiny]

Without --mother a perturbed copy of the father is written once under .cache/bench/.
`--tiny` uses the tests' tiny llama pair instead (seconds; the machinery, not the numbers).
Targets (issue 6): merge <= 0.25x of the candidate's evaluation; Phase 1 in seconds.
Target (issue 15): racing at least 2x the candidates per hour of today's scoring.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from darwin_merge.evolve import proxy, racing  # noqa: E402
from darwin_merge.evolve.phase1 import run_phase1  # noqa: E402
from darwin_merge.evolve.scoring import CandidateScorer  # noqa: E402
from darwin_merge.genome import Genome  # noqa: E402
from darwin_merge.merge.engine import ParentTensors  # noqa: E402
from darwin_merge.merge.plan import MergeSettings  # noqa: E402
from darwin_merge.realmodels import ensure_real_model  # noqa: E402

FITNESS = {"simple_arithmetic": 0.5, "arc_easy": 0.5}


def race_genomes(count: int, seed: int = 0) -> list[Genome]:
    """A fixed stream of candidates like a search's: the line's middle, then random
    steps around it (the same stream for both ways of scoring)."""
    rng = np.random.default_rng(seed)
    centre = np.array(Genome.uniform(0.5, density=0.9, merge_method_weight=0.5).values())
    return [Genome.from_values(np.clip(centre + rng.normal(0, 0.25, centre.size), 0, 1))
            for _ in range(count)]


def per_hour(scorer: CandidateScorer, genomes: list[Genome], race: bool) -> dict:
    """Score the stream today's way or racing; candidates per hour and the best found."""
    started = time.perf_counter()
    best, stopped = None, 0
    for genome in genomes:
        if race:
            value, scores, _, record = racing.race(scorer, genome, best)
            stopped += record["outcome"] == "stopped"
            full = record["outcome"] == "full"
        else:
            value, scores, _ = scorer.score(genome)
            full = True
        if full and (best is None or value > best["value"]):
            best = {"number": genomes.index(genome), "value": value,
                    "item_scores": {t: scores[t]["item_scores"] for t in scorer.weights}}
    seconds = time.perf_counter() - started
    return {"candidates": len(genomes), "seconds": round(seconds, 2),
            "candidates_per_hour": round(len(genomes) * 3600 / seconds, 1),
            "stopped_early": stopped, "best_candidate": best["number"],
            "best_fitness": round(best["value"], 4)}


def tiny_pair() -> tuple[Path, Path]:
    from tiny_models import make_tiny, perturbed_copy

    root = Path(".cache/bench/tiny-evolve")
    if not (root / "mother" / "config.json").is_file():
        make_tiny("llama", root / "father", seed=0)
        perturbed_copy(root / "father", root / "mother", scale=0.5, seed=3)
    return root / "father", root / "mother"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mother", type=Path)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--race-candidates", type=int, default=12)
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny llama pair")
    args = parser.parse_args()
    if args.tiny:
        father, mother = tiny_pair()
    else:
        father = ensure_real_model("smollm2", Path(".cache"))
        mother = args.mother
    if mother is None:
        from tiny_models import perturbed_copy

        mother = Path(".cache/bench/smollm2-perturbed-evolve")
        if not (mother / "config.json").is_file():
            perturbed_copy(father, mother, scale=0.05, seed=3)
    parents = ParentTensors.load(father, mother)
    settings = MergeSettings()
    scorer = CandidateScorer(parents, FITNESS, None, settings, limit=args.limit)
    merges, evals = [], []
    for i in range(args.candidates):
        genome = Genome.uniform(0.3 + 0.2 * i, density=0.8, merge_method_weight=0.5)
        _, _, timings = scorer.score(genome)
        merges.append(timings["merge_seconds"])
        evals.append(timings["eval_seconds"])
    # Phase 1 on a synthetic scan table (the proxy's cost does not depend on the values)
    layers = [{"MATH": 0.1, "KNOWLEDGE": 0.2, "REASONING": 0.1}] * 30
    stakes = [proxy.TaskStake(t, 0.5, d, 0.1, proxy.layer_importance(
        {"father": layers, "mother": layers}, d, {"MATH": 1.0}, 30))
        for t, d in (("simple_arithmetic", "mother"), ("arc_easy", "father"))]
    delta = {n: float(((parents.mother[n].float() - a.float()) ** 2).sum())
             for n, a in parents.father.items()}
    data = proxy.ProxyData(parents.infos, parents.shapes(), None, delta, 30, stakes, settings)
    started = time.perf_counter()
    seen, _ = run_phase1(data, steps=200, top_k=8)
    phase1 = time.perf_counter() - started
    stream = race_genomes(args.race_candidates)
    today, raced = per_hour(scorer, stream, race=False), per_hour(scorer, stream, race=True)
    result = {"merge_s": statistics.median(merges), "eval_s": statistics.median(evals),
              "ratio": statistics.median(merges) / statistics.median(evals),
              "phase1_s": phase1, "phase1_evaluations": len(seen), "limit": args.limit,
              "today": today, "racing": raced,
              "racing_speedup": round(raced["candidates_per_hour"]
                                      / today["candidates_per_hour"], 2)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
