"""Score linear father/mother mixes set per component: where do a mother's skill and cost live?

Each MIX is `component=share,...` over attn, mlp, norm, embed (embed covers the tied output
head); `all=share` sets every one. A tensor becomes father + share * (mother - father). The
mixes are scored in memory on the `search` split (`--split holdout` for the final tables
only: choosing a recipe on the holdout makes it a development set; docs/DEMO.md's probe
tables of 2026-11 were on the holdout):

    .venv/bin/python scripts/probe-mix.py FATHER MOTHER all=0.5 all=0.8 all=1,embed=0 \
        --tasks two_digit_arithmetic,arc_easy,lambada_openai --limit 150
"""

from __future__ import annotations

import argparse

import torch

from darwin_merge.eval import evaluate
from darwin_merge.io.loading import load_model, load_tokenizer

COMPONENTS = ("attn", "mlp", "norm", "embed")


def component(name: str) -> str:
    if "embed" in name or "lm_head" in name:
        return "embed"
    if "self_attn" in name:
        return "attn"
    return "mlp" if ".mlp." in name else "norm"


def parse_mix(text: str) -> dict[str, float]:
    shares: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        keys = COMPONENTS if key == "all" else (key,)
        if any(k not in COMPONENTS for k in keys) or not value:
            raise SystemExit(f"bad mix {text!r}: use all|attn|mlp|norm|embed=share,...")
        shares.update({k: float(value) for k in keys})
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("father")
    parser.add_argument("mother")
    parser.add_argument("mixes", nargs="+")
    parser.add_argument("--tasks", default="two_digit_arithmetic,arc_easy")
    parser.add_argument("--limit", type=int, default=150)
    parser.add_argument("--split", choices=("search", "holdout"), default="search")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.father), load_tokenizer(args.father)
    father = {k: v.clone() for k, v in model.state_dict().items()}
    mother = load_model(args.mother).state_dict()
    for text in args.mixes:
        shares = parse_mix(text)
        model.load_state_dict({k: v + shares.get(component(k), 0.0) * (mother[k] - v)
                               for k, v in father.items()})
        scores = evaluate(model, tokenizer, args.tasks.split(","), split=args.split,
                          limit=args.limit)
        print(text, " ".join(f"{t}={r['acc']:.3f}" for t, r in scores.items()), flush=True)


if __name__ == "__main__":
    main()
