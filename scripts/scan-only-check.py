"""Is the scan alone a good merge? The scan-only child against both parents and the baselines.

The scan-only child is the genome with every ratio 0.5, `mri_trust` 1 and
`merge_method_weight` 1 (pure DARE-TIES, default densities): every tensor's ratio is the
scan's `mri_ratio`, no search at all. It is scored beside the father, the mother, the two
uniform baselines (DARE-TIES 0.5 and linear 0.5) and, with `--base`, task arithmetic at
lambda 1.0 (`base + d_father + d_mother`), on the same items of `--split` (default
`search`: develop there; the holdout is for final tables), and each comparison is paired per
item (docs/SCAN.md, "Measured on the demo pair"):

    .venv/bin/python scripts/scan-only-check.py FATHER MOTHER SCAN_DIR [--base BASE] \
        --fitness two_digit_arithmetic=0.5,arc_easy=0.5 [--limit N] [--out check.json]
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from scipy.stats import binomtest, norm

from darwin_merge.eval.evaluator import loglik_requests
from darwin_merge.eval.loglik import encode_groups, score_groups
from darwin_merge.eval.metrics import choose
from darwin_merge.eval.tasks import resolve_tasks, select_items
from darwin_merge.evolve.recipe import parse_fitness
from darwin_merge.genome import Genome
from darwin_merge.io.loading import load_model, load_tokenizer
from darwin_merge.merge.engine import ParentTensors, merge_state
from darwin_merge.mergekit.standard import StandardMerger, StandardRecipe
from darwin_merge.scan import load_scan

MODELS = {
    "scan-only child": (Genome.scan_only(), True),
    "dare_ties_0.5": (Genome.uniform(0.5, density=Genome().density_a), False),
    "linear_0.5": (Genome.uniform(0.5, density=1.0, merge_method_weight=0.0), False),
}


def item_correct(model, tokenizer, task, items) -> list[float]:
    """1.0/0.0 per item: the task's primary accuracy (acc; greedy match for continuations)."""
    groups = encode_groups(tokenizer, loglik_requests(task, items))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = score_groups(model, groups, 16, None, pad)
    if task.kind != "multiple_choice":
        return [float(s[0].is_greedy) for s in scores]
    return [float(choose([s.logprob for s in item], it.doc["choices"])[0] == it.doc["gold"])
            for item, it in zip(scores, items, strict=True)]


def paired(a: dict[str, list[float]], b: dict[str, list[float]], weights: dict) -> dict:
    """Weighted fitness difference a - b on the same items, its SE, and p-values: a normal
    test of the difference and an exact McNemar (binomial) test per task."""
    diff, var, per_task = 0.0, 0.0, {}
    for task, w in weights.items():
        d = [x - y for x, y in zip(a[task], b[task], strict=True)]
        n = len(d)
        mean = sum(d) / n
        sd2 = sum((v - mean) ** 2 for v in d) / (n - 1)
        wins, losses = d.count(1.0), d.count(-1.0)
        mcnemar = binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
        per_task[task] = {"diff": mean, "se": math.sqrt(sd2 / n), "wins": wins,
                          "losses": losses, "mcnemar_p": mcnemar}
        diff += w * mean
        var += w * w * sd2 / n
    se = math.sqrt(var)
    p = 2 * norm.sf(abs(diff) / se) if se > 0 else 1.0
    return {"diff": diff, "se": se, "p": p, "tasks": per_task}


def fitness_items(spec: str, split: str, limit: int | None) -> tuple[dict, list, dict]:
    """The fitness weights (summing to 1), its tasks and each task's items of `split`."""
    fitness = parse_fitness(spec)
    weights = {k: v / sum(fitness.values()) for k, v in fitness.items()}
    tasks = resolve_tasks(list(weights))
    return weights, tasks, {t.name: select_items(t, split, limit) for t in tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("father")
    parser.add_argument("mother")
    parser.add_argument("scan")
    parser.add_argument("--base", default=None, help="the parents' common base (the merges' "
                        "base, and task arithmetic 1.0 beside the others)")
    parser.add_argument("--fitness", default="two_digit_arithmetic=0.5,arc_easy=0.5")
    parser.add_argument("--limit", type=int, default=None, help="items per task (all)")
    parser.add_argument("--split", choices=("search", "holdout", "all"), default="search",
                        help="all: every item of a task file, e.g. the fresh test items of "
                        "`darwin demo test-items` given as --fitness FILE=w,...")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights, tasks, items = fitness_items(args.fitness, args.split, args.limit)
    scan = load_scan(args.scan)
    ratios = scan.mri_ratios()
    parents = ParentTensors.load(args.father, args.mother, args.base)
    model, tokenizer = load_model(args.father), load_tokenizer(args.father)
    own = model.state_dict()
    results = {}
    states = {"father": parents.father, "mother": parents.mother}
    states.update({name: (genome, with_scan) for name, (genome, with_scan) in MODELS.items()})
    if args.base:
        states["task_arithmetic_1.0"] = StandardRecipe(method="task_arithmetic", scale=1.0)
    for name, state in states.items():
        if isinstance(state, StandardRecipe):
            state = StandardMerger(parents).state(state)
        if isinstance(state, tuple):
            genome, with_scan = state
            state = merge_state(parents, genome, ratios if with_scan else None)
        with torch.no_grad():
            for key, tensor in state.items():
                own[key].copy_(tensor)
        results[name] = {t.name: item_correct(model, tokenizer, t, items[t.name]) for t in tasks}
        accs = {t: sum(v) / len(v) for t, v in results[name].items()}
        fit = sum(weights[t] * a for t, a in accs.items())
        print(f"{name:16s} " + " ".join(f"{t}={a:.3f}" for t, a in accs.items())
              + f" fitness={fit:.4f}", flush=True)
    child = results["scan-only child"]
    report = {"split": args.split, "n": {t: len(v) for t, v in items.items()}, "weights": weights,
              "accuracy": {m: {t: sum(v) / len(v) for t, v in r.items()}
                           for m, r in results.items()},
              "child_vs": {}}
    for other in [m for m in results if m != "scan-only child"]:
        row = paired(child, results[other], weights)
        report["child_vs"][other] = row
        low, high = row["diff"] - 1.96 * row["se"], row["diff"] + 1.96 * row["se"]
        print(f"child - {other:19s} {row['diff']:+.4f} ± {row['se']:.4f} [95%: {low:+.4f}, "
              f"{high:+.4f}] (p = {row['p']:.2g}); "
              + "; ".join(f"{t} {r['diff']:+.3f} (+{r['wins']}/-{r['losses']}, McNemar p = "
                          f"{r['mcnemar_p']:.2g})" for t, r in row["tasks"].items()), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
