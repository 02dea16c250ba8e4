"""darwin eval vs lm-evaluation-harness (`hf` model) on the same ARC-Easy items, one run.

Both run as subprocesses with the same environment (thread count, offline flags), end to
end (start-up, model load, scoring), on the first N ARC-Easy items shipped with darwin.
lm-eval lives in its own virtual environment (.bench-venv-lmeval: `pip install
torch==2.13.0` first, then `lm-eval transformers==5.24.0`) and reads the items from a
local task YAML over a local JSONL file, so it never reaches a hub.

    .venv/bin/python bench/bench_eval.py --limit 200 --batch-size 16 --threads 1 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / ".cache" / "models" / "smollm2-135m-instruct"
LMEVAL_PY = ROOT / ".bench-venv-lmeval" / "bin" / "python"

TASK_YAML = """task: darwin_arc_easy_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def write_items(folder: Path, limit: int) -> Path:
    from darwin_merge.eval import registry, select_items

    items = select_items(registry()["arc_easy"], "all", limit)
    path = folder / "arc_easy_items.jsonl"
    path.write_text("".join(json.dumps(it.doc) + "\n" for it in items), encoding="utf-8")
    (folder / "darwin_arc_easy_local.yaml").write_text(TASK_YAML.format(items=path))
    return path


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one command; CPU time is the fairer
    measure on a machine shared with other jobs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return round(wall, 2), round(cpu, 2)


def run_darwin(folder: Path, args, env) -> tuple[tuple[float, float], dict]:
    out = folder / "darwin.json"
    cmd = [str(ROOT / ".venv" / "bin" / "darwin"), "eval", str(args.model), "--tasks",
           "arc_easy", "--limit", str(args.limit), "--batch-size", str(args.batch_size),
           "--out", str(out)]
    seconds = timed(cmd, env)
    res = json.loads(out.read_text())["results"]["arc_easy"]
    return seconds, {"acc": res["acc"], "acc_norm": res["acc_norm"]}


def run_lmeval(folder: Path, args, env) -> tuple[tuple[float, float], dict]:
    out = folder / "lmeval"
    cmd = [str(LMEVAL_PY), "-m", "lm_eval", "--model", "hf", "--model_args",
           f"pretrained={args.model},dtype=float32", "--tasks", "darwin_arc_easy_local",
           "--include_path", str(folder), "--batch_size", str(args.batch_size),
           "--device", "cpu", "--output_path", str(out)]
    seconds = timed(cmd, env)
    result_file = sorted(out.rglob("results_*.json"))[-1]
    res = json.loads(result_file.read_text())["results"]["darwin_arc_easy_local"]
    return seconds, {"acc": res["acc,none"], "acc_norm": res["acc_norm,none"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if not LMEVAL_PY.exists():
        sys.exit(f"{LMEVAL_PY} missing: create .bench-venv-lmeval (see this file's docstring)")
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_items(folder, args.limit)
        env["HF_DATASETS_CACHE"] = str(folder / "hf_datasets")
        darwin_t, lmeval_t = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            seconds, darwin_scores = run_darwin(folder, args, env)
            darwin_t.append(seconds)
            seconds, lmeval_scores = run_lmeval(folder, args, env)
            lmeval_t.append(seconds)
    wall = {k: statistics.median(t[0] for t in v) for k, v in
            (("darwin", darwin_t), ("lmeval", lmeval_t))}
    cpu = {k: statistics.median(t[1] for t in v) for k, v in
           (("darwin", darwin_t), ("lmeval", lmeval_t))}
    diff = {k: round(100 * (darwin_scores[k] - lmeval_scores[k]), 2) for k in darwin_scores}
    print(json.dumps({"items": args.limit, "batch_size": args.batch_size,
                      "threads": args.threads, "darwin_wall_cpu_s": darwin_t,
                      "lmeval_wall_cpu_s": lmeval_t,
                      "speedup_wall": round(wall["lmeval"] / wall["darwin"], 2),
                      "speedup_cpu": round(cpu["lmeval"] / cpu["darwin"], 2),
                      "darwin": darwin_scores,
                      "lmeval": lmeval_scores,
                      "diff_points": diff},
                     indent=2))


if __name__ == "__main__":
    main()
