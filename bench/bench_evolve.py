"""Evolve's hot path on SmolLM2-135M: in-memory candidate merge vs that candidate's
evaluation (default demo fitness), and the Phase 1 proxy's wall time.

    .venv/bin/python bench/bench_evolve.py [--mother DIR] [--limit 40] [--candidates 3]

Without --mother a perturbed copy of the father is written once under .cache/bench/.
Targets (issue 6): merge <= 0.25x of the candidate's evaluation; Phase 1 in seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from darwin_merge.evolve import proxy  # noqa: E402
from darwin_merge.evolve.scoring import CandidateScorer  # noqa: E402
from darwin_merge.genome import Genome  # noqa: E402
from darwin_merge.merge.engine import ParentTensors  # noqa: E402
from darwin_merge.merge.plan import MergeSettings  # noqa: E402
from darwin_merge.realmodels import ensure_real_model  # noqa: E402

FITNESS = {"simple_arithmetic": 0.5, "arc_easy": 0.5}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mother", type=Path)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--candidates", type=int, default=3)
    args = parser.parse_args()
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
    seen, _ = proxy.run_phase1(data, steps=200, top_k=8)
    phase1 = time.perf_counter() - started
    result = {"merge_s": statistics.median(merges), "eval_s": statistics.median(evals),
              "ratio": statistics.median(merges) / statistics.median(evals),
              "phase1_s": phase1, "phase1_evaluations": len(seen), "limit": args.limit}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
