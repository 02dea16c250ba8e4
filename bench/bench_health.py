"""Health check cost vs a plain forward pass over the same probe prompts, same run.

Usage: .venv/bin/python bench/bench_health.py [--model .cache/models/smollm2-135m-instruct]
       [--prompts 10] [--max-tokens 64] [--threads 1]

Father: the model; mother: the model plus small seeded noise; child: their average
(all in memory, so loading is not timed). The rival is one plain forward pass of one
model over the probe batches (logits, no hooks). The health check runs three models
(child, father, mother) with traced forwards, so about 3x is the expected ratio. A check
against the parents measured once before (`parent_reference`, as a search keeps them) runs
the child alone: about 1x, with the same report.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from darwin_merge.health import check_health, parent_reference
from darwin_merge.io.loading import load_model, load_tokenizer
from darwin_merge.scan.probes import batches, context_length, load_probes, pad_id_of, tokenize_probe


def noisy_copy(model, scale: float, seed: int):
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * (p.std() + 1e-3))
    return other


def average(a, b):
    child = copy.deepcopy(a)
    with torch.no_grad():
        for pc, pb in zip(child.parameters(), b.parameters(), strict=True):
            pc.mul_(0.5).add_(pb, alpha=0.5)
    return child


def timed(fn):
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def plain_forward(model, tokenizer, prompts: int, max_tokens: int, batch_size: int) -> int:
    tokens = 0
    with torch.no_grad():
        for name, texts in load_probes().items():
            rows = tokenize_probe(tokenizer, name, texts[:prompts], max_tokens,
                                  context_length(model))
            for ids, mask in batches(rows, batch_size, pad_id_of(tokenizer)):
                model(input_ids=ids, attention_mask=mask, use_cache=False)
                tokens += int(mask.sum())
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path(".cache/models/smollm2-135m-instruct"))
    parser.add_argument("--prompts", type=int, default=10, help="prompts per probe set")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    father = load_model(args.model)
    mother = noisy_copy(father, 0.02, seed=1)
    child = average(father, mother)
    tokenizer = load_tokenizer(args.model)

    cpu_f, wall_f, tokens = timed(lambda: plain_forward(father, tokenizer, args.prompts,
                                                        args.max_tokens, args.batch_size))
    cpu_h, wall_h, report = timed(lambda: check_health(
        child, father, mother, max_prompts=args.prompts, max_tokens=args.max_tokens,
        batch_size=args.batch_size, tokenizer=tokenizer))
    print(f"model {args.model.name}; 5 probe sets x {args.prompts} prompts, {tokens} tokens; "
          f"{args.threads} thread(s)")
    print(f"plain forward (1 model): {cpu_f:.2f} s CPU, {wall_f:.2f} s wall")
    print(f"health check (3 models): {cpu_h:.2f} s CPU, {wall_h:.2f} s wall; "
          f"verdict {report['verdict']}")
    print(f"ratio health/forward: CPU {cpu_h / cpu_f:.2f}, wall {wall_h / wall_f:.2f}")
    settings = {"max_prompts": args.prompts, "max_tokens": args.max_tokens,
                "batch_size": args.batch_size, "tokenizer": tokenizer}
    reference = parent_reference(father, mother, **settings)
    cpu_r, wall_r, kept = timed(lambda: check_health(child, father, mother, parents=reference,
                                                     **settings))
    if kept != report:
        raise SystemExit("the check against the kept parents gave another report")
    print(f"health check, parents measured once (child only): {cpu_r:.2f} s CPU, "
          f"{wall_r:.2f} s wall; the same report")
    print(f"ratio kept-parents check/forward: CPU {cpu_r / cpu_f:.2f}, "
          f"wall {wall_r / wall_f:.2f}")


if __name__ == "__main__":
    main()
