"""Scan probe pass: cached layer skip vs the naive one-forward-per-skipped-layer, same run;
with --mother, the whole scan's cost as a multiple of one Phase 2 candidate evaluation.

Usage: .venv/bin/python bench/bench_scan.py [--model .cache/models/smollm2-135m-instruct]
       [--prompts 4] [--max-tokens 24] [--threads 1] [--repeats 2]
       .venv/bin/python bench/bench_scan.py --model FATHER --mother MOTHER
       [--fitness two_digit_arithmetic=0.5,arc_easy=0.5] [--limit 100] [--threads 2]

The second form runs the demo's scan (attribution formula, 10 prompts of 48 tokens per probe
set, 32 search items per fitness task) and one candidate evaluation (the fitness tasks' first
`--limit` search items, as Phase 2 scores a candidate), each timed in CPU and wall seconds.

Both methods score the same batch of shipped probe prompts (the first N of each set),
alternating `repeats` times; each keeps its best process-CPU and wall time. The
script also checks that both give the same distances.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from darwin_merge.io.loading import load_model, load_tokenizer
from darwin_merge.scan.layers import decoder_of, layer_skip_distances
from darwin_merge.scan.probes import (
    batches,
    context_length,
    load_probes,
    pad_id_of,
    tokenize_probe,
)


def timed(fn) -> tuple[float, float, torch.Tensor]:
    """(process CPU seconds, wall seconds, result): CPU time is what a shared machine's
    other tenants cannot inflate (with one thread it is the work done)."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def measure(model, ids, mask, repeats: int) -> dict:
    """Alternate the two methods `repeats` times; keep each one's best CPU and wall time."""
    best = {m: [float("inf"), float("inf"), None] for m in ("cached", "naive")}
    for _ in range(repeats):
        for method in ("cached", "naive"):
            cpu, wall, result = timed(lambda m=method: layer_skip_distances(model, ids, mask, m))
            best[method] = [min(best[method][0], cpu), min(best[method][1], wall), result]
    return best


def scan_cost(args) -> None:
    """The whole scan against one candidate evaluation, in the same run."""
    import tempfile

    from darwin_merge.eval import evaluate
    from darwin_merge.evolve.recipe import parse_fitness
    from darwin_merge.scan import run_scan

    fitness = parse_fitness(args.fitness)
    tokenizer = load_tokenizer(args.model)

    def one_candidate(model=load_model(args.model)):
        return evaluate(model, tokenizer, list(fitness), split="search", limit=args.limit)

    cpu_eval, wall_eval, _ = timed(one_candidate)
    with tempfile.TemporaryDirectory() as tmp:
        cpu_scan, wall_scan, scan = timed(lambda: run_scan(
            args.model, args.mother, Path(tmp) / "scan", max_tokens=48, max_prompts=10,
            fitness=fitness, progress=False))
    groups = len(scan.attribution["groups"])
    print(f"one candidate evaluation ({', '.join(fitness)}, {args.limit} search items each): "
          f"{cpu_eval:.1f} s CPU, {wall_eval:.1f} s wall")
    print(f"whole scan (static, layer skip, attribution over {groups} groups x 2 swaps): "
          f"{cpu_scan:.1f} s CPU, {wall_scan:.1f} s wall")
    print(f"scan / candidate: CPU {cpu_scan / cpu_eval:.1f}x, wall {wall_scan / wall_eval:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path(".cache/models/smollm2-135m-instruct"))
    parser.add_argument("--prompts", type=int, default=4, help="prompts per probe set")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mother", type=Path, default=None, help="measure the whole scan")
    parser.add_argument("--fitness", default="two_digit_arithmetic=0.5,arc_easy=0.5")
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.mother is not None:
        scan_cost(args)
        return

    model = load_model(args.model, args.device)
    tokenizer = load_tokenizer(args.model)
    rows = []
    for name, texts in load_probes().items():
        rows += tokenize_probe(tokenizer, name, texts[:args.prompts], args.max_tokens,
                               context_length(model))
    ids, mask = next(batches(rows, len(rows), pad_id_of(tokenizer), args.device))
    num_layers = len(decoder_of(model).layers)
    tokens = int(mask.sum())
    print(f"model {args.model.name}: {num_layers} layers; {len(rows)} prompts, {tokens} tokens; "
          f"{args.threads} thread(s), device {args.device}")

    best = measure(model, ids, mask, args.repeats)
    diff = float((best["cached"][2] - best["naive"][2]).abs().max())
    passes = {"cached": num_layers + num_layers * (num_layers - 1) // 2,
              "naive": num_layers + num_layers * num_layers}
    for method in ("cached", "naive"):
        cpu, wall, _ = best[method]
        print(f"{method}: {cpu:.2f} s CPU, {wall:.2f} s wall ({passes[method]} layer passes)")
    print(f"ratio cached/naive: CPU {best['cached'][0] / best['naive'][0]:.3f}, wall "
          f"{best['cached'][1] / best['naive'][1]:.3f} (layer-pass ratio "
          f"{passes['cached'] / passes['naive']:.3f}); max |cached - naive| distance "
          f"{diff:.2e}")

if __name__ == "__main__":
    main()
