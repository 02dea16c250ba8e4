"""A finished run's child against other models on every holdout item of the fitness tasks
(not the run's first `holdout_limit`): paired differences with their standard errors and
p-values (exact McNemar per task, paired bootstrap for the weighted fitness).

    .venv/bin/python scripts/holdout-compare.py runs/demo-smollm2 \
        [--against mother=DIR ...] [--limit N] [--out compare.json]

Without --against the child is compared with the run's mother (read from its summary).
Each model is scored once; nothing is tuned here: it is the run's own holdout test (the
split the search never saw) with more items.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from darwin_merge.eval import evaluate, paired
from darwin_merge.io.loading import load_model, load_tokenizer


def scores(folder: str, tasks: list[str], limit: int | None) -> dict[str, dict]:
    model, tokenizer = load_model(folder), load_tokenizer(folder)
    return evaluate(model, tokenizer, tasks, split="holdout", limit=limit, progress=True)


def item_scores(result: dict) -> list[float]:
    values = result["item_scores"]
    return values if result["higher_is_better"] else [-v for v in values]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--against", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    summary = json.loads((args.run / "summary.json").read_text())
    weights = summary["fitness"]
    others = dict(a.split("=", 1) for a in args.against) or {"mother": summary["mother"]}
    tasks = list(weights)
    child = scores(str(args.run / "child"), tasks, args.limit)
    report = {"run": str(args.run), "split": "holdout", "weights": weights,
              "n": {t: child[t]["n"] for t in tasks},
              "child": {t: child[t][child[t]["metric"]] for t in tasks}, "against": {}}
    for name, folder in others.items():
        other = scores(folder, tasks, args.limit)
        pairs = {t: (item_scores(child[t]), item_scores(other[t])) for t in tasks}
        result = {t: paired.compare(*pairs[t]) for t in tasks}
        result["fitness"] = paired.compare_weighted(pairs, weights)
        report["against"][name] = result
        for key, row in result.items():
            print(f"child - {name} on {key} (n={row['n']}): {row['diff']:+.4f} "
                  f"± {row['stderr']:.4f}, p {row['p']:.3g} ({row['test']})")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
