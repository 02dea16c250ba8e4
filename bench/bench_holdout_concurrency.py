"""The finish's holdout scoring, one model at a time on every thread against two at a time
on one thread each (`evolve.scoring.score_concurrently`), in one run: wall time and
how many answers the thread count moves.

The models are the specialists demo's three (the base and its two fine-tunes, built by
`make demo`), scored on its six holdout tasks as the finish does it (one
job per model and task, `evolve.holdout.HoldoutJobs`). The two ways alternate `--repeats`
times, so both see the same machine load.

    .venv/bin/python bench/bench_holdout_concurrency.py --limit 200 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_eval import ROOT

MODELS = ROOT / ".cache" / "models"
BASE = MODELS / "smollm2-135m-instruct"
TASKS = ["two_digit_arithmetic", "letter_reversal", "arc_easy", "lambada_openai",
         "arc_challenge", "piqa"]


def specialists() -> tuple[Path, Path]:
    """The specialists demo's two cached fine-tunes of the base."""
    from darwin_recipes.demo.mother import mother_folder
    from darwin_recipes.demo.run import SPECIALIST_RECIPES

    found = [mother_folder(BASE, ROOT / ".cache", SPECIALIST_RECIPES[role])
             for role in ("father", "mother")]
    if not all(folder.is_dir() for folder in found):
        sys.exit("the specialists are missing: `make demo` first")
    return found[0], found[1]


def main() -> None:
    from darwin_merge.evolve.holdout import HoldoutJobs
    from darwin_merge.evolve.scoring import CandidateScorer, concurrency, score_concurrently
    from darwin_merge.merge.engine import ParentTensors
    from darwin_merge.merge.plan import MergeSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16", help="the forward passes' dtype")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    father, mother = specialists()
    parents = ParentTensors.load(father, mother, BASE)
    scorer = CandidateScorer(parents, {TASKS[0]: 0.5, TASKS[1]: 0.5}, None, MergeSettings(),
                             split="holdout", limit=args.limit, batch_size=args.batch_size,
                             dtype=args.dtype)
    states = {name: getattr(parents, name) for name in ("father", "mother", "base")}
    limits = dict.fromkeys(TASKS, args.limit)
    threads = torch.get_num_threads()
    seconds: dict[str, list[float]] = {"one_at_a_time": [], "two_at_a_time": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        alone = {key: job(scorer) for key, job in HoldoutJobs(states, limits).jobs().items()}
        seconds["one_at_a_time"].append(round(time.perf_counter() - start, 2))
        start = time.perf_counter()
        together = score_concurrently(scorer, HoldoutJobs(states, limits).jobs())
        seconds["two_at_a_time"].append(round(time.perf_counter() - start, 2))
    moved = {name: {task: sum(a != b for a, b in zip(alone[name, task]["item_scores"],
                                                     together[name, task]["item_scores"],
                                                     strict=True))
                    for task in TASKS} for name in states}
    median = {way: statistics.median(values) for way, values in seconds.items()}
    print(json.dumps({"models": [father.name, mother.name, BASE.name], "dtype": args.dtype,
                      "items_per_task": args.limit, "torch_threads": threads,
                      "workers": concurrency(scorer, len(states)), "seconds": seconds,
                      "speedup": round(median["one_at_a_time"] / median["two_at_a_time"], 2),
                      "answers_moved_by_the_thread_count": moved}, indent=2))


if __name__ == "__main__":
    main()
