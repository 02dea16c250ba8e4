"""Scan probe pass: cached layer skip vs the naive one-forward-per-skipped-layer, same run.

Usage: .venv/bin/python bench/bench_scan.py [--model .cache/models/smollm2-135m-instruct]
       [--prompts 4] [--max-tokens 24] [--threads 1] [--repeats 2]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path(".cache/models/smollm2-135m-instruct"))
    parser.add_argument("--prompts", type=int, default=4, help="prompts per probe set")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

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
