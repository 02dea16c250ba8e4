"""darwin eval in float32 against bfloat16 on the same items, one run: time and paired scores.

`--eval-dtype bfloat16` (darwin evolve, the specialists demo) runs every forward pass in
bfloat16 while the parents and each merge stay float32. This measures what that buys and
costs on one model: the wall and CPU time of `darwin eval` over the specialists demo's six
holdout tasks in each dtype (interleaved, so both see the same machine load), and per task
both accuracies with their paired difference (McNemar's exact p on the same items).

    .venv/bin/python bench/bench_eval_dtype.py --limit 200 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench_eval import ROOT, timed

MODELS = ROOT / ".cache" / "models"
TASKS = "two_digit_arithmetic,letter_reversal,arc_easy,lambada_openai,arc_challenge,piqa"
DTYPES = ("float32", "bfloat16")


def run_darwin(folder: Path, dtype: str, args, env) -> tuple[tuple[float, float], dict]:
    """(wall, CPU) seconds and, per task, the per-item acc of one `darwin eval` run."""
    out = folder / dtype / "results.json"
    cmd = [str(ROOT / ".venv" / "bin" / "darwin"), "eval", str(args.model), "--tasks",
           args.tasks, "--split", "holdout", "--limit", str(args.limit), "--dtype", dtype,
           "--batch-size", str(args.batch_size), "--out", str(out), "--log-samples"]
    seconds = timed(cmd, env)
    items = {}
    for path in sorted(out.parent.glob("samples_*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        task = path.name[len("samples_"):].rsplit("_", 1)[0]
        items[task] = {r["doc_id"]: float(r["acc"]) for r in records}
    return seconds, items


def main() -> None:
    from darwin_merge.eval.paired import compare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODELS / "smollm2-135m-instruct")
    parser.add_argument("--tasks", default=TASKS)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if not args.model.is_dir():
        sys.exit(f"{args.model} missing: `make models` first")
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    times: dict[str, list] = {d: [] for d in DTYPES}
    scores: dict[str, dict] = {}  # dtype -> task -> item -> acc (the same on every repeat)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for dtype in DTYPES:
                seconds, items = run_darwin(Path(tmp), dtype, args, env)
                times[dtype].append(seconds)
                scores[dtype] = items
    tasks = {}
    for task, first in scores["float32"].items():
        ids = sorted(first)
        a = [scores["bfloat16"][task][i] for i in ids]
        b = [first[i] for i in ids]
        paired = compare(a, b)
        tasks[task] = {"float32": round(statistics.mean(b), 4),
                       "bfloat16": round(statistics.mean(a), 4),
                       "diff": round(paired["diff"], 4), "p": round(paired["p"], 3),
                       "items_that_differ": sum(x != y for x, y in zip(a, b, strict=True)),
                       "n": len(ids)}
    wall = {d: statistics.median(t[0] for t in times[d]) for d in DTYPES}
    cpu = {d: statistics.median(t[1] for t in times[d]) for d in DTYPES}
    print(json.dumps({"model": args.model.name, "items_per_task": args.limit,
                      "wall_cpu_s": times,
                      "speedup_wall": round(wall["float32"] / wall["bfloat16"], 2),
                      "speedup_cpu": round(cpu["float32"] / cpu["bfloat16"], 2),
                      "tasks": tasks}, indent=2))


if __name__ == "__main__":
    main()
