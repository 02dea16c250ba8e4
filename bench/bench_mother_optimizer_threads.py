"""The mother's fine-tune with the optimizer's step on one thread against on all of them
(`MotherRecipe.optimizer_threads`), in one run: seconds per step and whether the weights
are the same bit for bit.

The forward and backward passes run on one thread either way (the recipe's `threads`:
their sums' order decides the trajectory, demo/mother.py); only AdamW's element-by-element
step gets the other threads. The default recipe's first `--steps` steps on the real
SmolLM2-135M-Instruct (`make demo` imports it), the two ways alternating `--repeats` times
so that both see the same machine load.

    .venv/bin/python bench/bench_mother_optimizer_threads.py --steps 8 --repeats 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time

import torch
from bench_eval import ROOT

FATHER = ROOT / ".cache" / "models" / "smollm2-135m-instruct"


def trained(recipe, optimizer_threads: int) -> tuple[float, dict]:
    """(seconds per step, final weights) of `recipe` with the optimizer on that many threads."""
    from darwin_merge.io.loading import load_model, load_tokenizer
    from darwin_recipes.demo.mother import evaluation_contexts, skill_of, train

    model, tokenizer = load_model(FATHER), load_tokenizer(FATHER)
    exclude = evaluation_contexts(None, skill_of(recipe.skill))
    start = time.perf_counter()
    train(model, tokenizer, recipe, exclude, torch.device("cpu"), progress=False,
          optimizer_threads=optimizer_threads)
    seconds = (time.perf_counter() - start) / recipe.steps
    return seconds, {name: t.clone() for name, t in model.state_dict().items()}


def main() -> None:
    from darwin_recipes.demo.mother import MotherRecipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if not (FATHER / "config.json").is_file():
        sys.exit(f"{FATHER} is missing: `make demo` (or `make models`) imports it first")
    recipe = dataclasses.replace(MotherRecipe(), steps=args.steps)
    cores = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    per_step: dict[str, list[float]] = {"optimizer_on_1_thread": [],
                                        f"optimizer_on_{cores}_threads": []}
    identical = True
    for _ in range(args.repeats):
        seconds_one, one = trained(recipe, 1)
        seconds_all, every = trained(recipe, cores)
        per_step["optimizer_on_1_thread"].append(round(seconds_one, 3))
        per_step[f"optimizer_on_{cores}_threads"].append(round(seconds_all, 3))
        identical &= all(torch.equal(one[name], every[name]) for name in one)
    median = [statistics.median(values) for values in per_step.values()]
    print(json.dumps({"model": FATHER.name, "steps": args.steps, "cores": cores,
                      "seconds_per_step": per_step,
                      "speedup": round(median[0] / median[1], 2),
                      "weights_identical_bit_for_bit": identical}, indent=2))


if __name__ == "__main__":
    main()
