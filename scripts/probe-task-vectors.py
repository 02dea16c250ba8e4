"""Score base + a * (father - base) + b * (mother - base) for a few (a, b): do two fine-tunes'
task vectors add up, or does one break the other? Scored in memory, forward passes in
bfloat16, as in docs/DEMO.md's Gemma 3 table:

    .venv/bin/python scripts/probe-task-vectors.py BASE FATHER MOTHER 1,1 0.5,0.5 0.7,0.5 \
        --tasks two_digit_arithmetic,letter_reversal,arc_easy,lambada_openai --limit 60
"""

from __future__ import annotations

import argparse

import torch

from darwin_merge.eval import evaluate
from darwin_merge.io.loading import load_model, load_tokenizer


def parse_scales(text: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError:
        raise SystemExit(f"bad scales {text!r}: use A,B (e.g. 0.5,0.5)") from None
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("father")
    parser.add_argument("mother")
    parser.add_argument("scales", nargs="+", type=parse_scales)
    parser.add_argument("--tasks", default="two_digit_arithmetic,letter_reversal")
    parser.add_argument("--split", default="search")
    parser.add_argument("--limit", type=int, default=60)
    args = parser.parse_args()
    model, tokenizer = load_model(args.base), load_tokenizer(args.base)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    father, mother = load_model(args.father).state_dict(), load_model(args.mother).state_dict()
    for a, b in args.scales:
        model.load_state_dict({k: v + a * (father[k] - v) + b * (mother[k] - v)
                               for k, v in base.items()})
        scores = evaluate(model.to(torch.bfloat16), tokenizer, args.tasks.split(","),
                          split=args.split, limit=args.limit, batch_size=32)
        model.to(torch.float32)
        print(f"a={a} b={b}", " ".join(f"{t}={r['acc']:.3f}" for t, r in scores.items()),
              flush=True)


if __name__ == "__main__":
    main()
