"""Uniform merges along the ratio family: what any split of one task vector's weight reaches.

For each mother's share r given, DARE-TIES (default densities) and linear merges with every
ratio r, scored on the first --limit items of --split (default `search`) as
`scan-only-check.py` scores (primary accuracy per item). docs/SCAN.md ("No ratio alone can
meet it there") has the overlap pair's table:

    .venv/bin/python scripts/ratio-sweep.py FATHER MOTHER --base BASE \
        --fitness two_digit_arithmetic=0.5,letter_reversal=0.5 --limit 100 0.2 0.3 0.4 0.5
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

from darwin_merge.genome import Genome
from darwin_merge.io.loading import load_model, load_tokenizer
from darwin_merge.merge.engine import ParentTensors, merge_state

_spec = importlib.util.spec_from_file_location(
    "scan_only_check", Path(__file__).with_name("scan-only-check.py"))
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("father")
    parser.add_argument("mother")
    parser.add_argument("ratios", nargs="+", type=float, help="mothers' shares to merge at")
    parser.add_argument("--base", default=None)
    parser.add_argument("--fitness", default="two_digit_arithmetic=0.5,letter_reversal=0.5")
    parser.add_argument("--limit", type=int, default=100, help="items per task")
    parser.add_argument("--split", choices=("search", "holdout", "all"), default="search")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights, tasks, items = check.fitness_items(args.fitness, args.split, args.limit)
    parents = ParentTensors.load(args.father, args.mother, args.base)
    model, tokenizer = load_model(args.father), load_tokenizer(args.father)
    own = model.state_dict()
    for ratio in args.ratios:
        for name, genome in (("dare_ties", Genome.uniform(ratio, density=Genome().density_a)),
                             ("linear", Genome.uniform(ratio, density=1.0,
                                                       merge_method_weight=0.0))):
            with torch.no_grad():
                for key, tensor in merge_state(parents, genome, None).items():
                    own[key].copy_(tensor)
            accs = {t.name: sum(check.item_correct(model, tokenizer, t, items[t.name]))
                    / len(items[t.name]) for t in tasks}
            fit = sum(weights[t] * a for t, a in accs.items())
            print(f"{name:9s} r={ratio:.2f} " + " ".join(f"{t}={a:.3f}" for t, a in accs.items())
                  + f" fitness={fit:.4f}", flush=True)


if __name__ == "__main__":
    main()
