"""The standard recipes over three specialists (issue 38's problem), before the N-parent
search exists: what a child of three parents has to beat.

    .venv/bin/python bench/bench_trio.py [--problem smollm2-specialists-trio] [--cache .cache]
        [--limit 50] [--test-seed 2026] [--out runs/bench-trio]

The problem's parents (each one-skill fine-tune of the base, trained when not cached) and
its base are held in memory. Task arithmetic, TIES and DARE-TIES over all three task
vectors at once are merged by darwin's engine with mergekit's semantics (StandardMerger,
the YAML a user writes with three models) on the search's grid (evolve/baselines.py
`tuning_grid`: 8 scales; 4 densities x 4 scales each), each point scored on the first
`--limit` search items of every fitness and guard task; a point's objective is the
search's: the fitness (the mean of the skills' accuracies) less 1 when a guard falls
below the base's score minus its tolerance (the floor rule). Each method's best point,
task arithmetic at lambda 1, the base and each specialist are then scored on fresh test
items of the three skills (`--test-seed`) and the guards' holdout items; the table gives
each skill, the fitness, the guards, each model's share of each specialist's own score,
and paired fitness differences against task arithmetic 1.0 (per item, bootstrap p).
Writes RUN/trio.json and RUN/trio.md; prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from darwin_merge.arch import Taxonomy
from darwin_merge.eval import evaluate
from darwin_merge.eval.paired import compare_weighted, p_text
from darwin_merge.evolve.baselines import tuning_grid
from darwin_merge.evolve.scoring import guard_verdicts, guarded, signed
from darwin_merge.io import ModelSource
from darwin_merge.io.loading import load_model, load_tokenizer
from darwin_merge.mergekit.standard import StandardMerger, StandardRecipe
from darwin_recipes.benchmark.problem import load_problem
from darwin_recipes.benchmark.run import problem_parents, test_items

BASE = "base"


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    with ModelSource(path) as source:
        return {name: source.get(name) for name in source.names}


class Scorer:
    """One model skeleton (the base's, bfloat16 forward passes) that any state is written
    into and scored."""

    def __init__(self, base: Path, batch_size: int = 32):
        self.model = load_model(base, device="cpu", dtype="bfloat16")
        self.tokenizer = load_tokenizer(base)
        self.batch_size = batch_size

    def score(self, state: dict[str, torch.Tensor], tasks: dict[str, tuple[str, str, int | None]]
              ) -> dict:
        """{label: TaskResult} of `state` on each (task name, split, limit)."""
        own = self.model.state_dict()
        with torch.no_grad():
            for name, tensor in state.items():
                own[name].copy_(tensor)
        return {label: evaluate(self.model, self.tokenizer, [name], split=split, limit=limit,
                                batch_size=self.batch_size)[name]
                for label, (name, split, limit) in tasks.items()}


def fitness(results: dict, weights: dict[str, float]) -> float:
    return sum(w * results[t].signed_primary for t, w in weights.items())


def tune(merger: StandardMerger, scorer: Scorer, search: dict, weights: dict[str, float],
         guard: dict[str, float], base_scores: dict) -> dict[str, dict]:
    """Every grid point's search scores and objective, by point name."""
    points = {}
    grid = [p for family in tuning_grid().values() for p in family]
    for index, point in enumerate(grid, start=1):
        started = time.perf_counter()
        results = scorer.score(merger.state(point), search)
        verdicts = guard_verdicts({t: results[t] for t in guard}, guard, {BASE: base_scores})
        value = fitness(results, weights)
        points[point.name] = {
            "recipe": point.model_dump(), "fitness": value,
            "objective": guarded(value, verdicts),
            "guards_kept": all(v["within"] for v in verdicts.values()),
            "scores": {t: r.signed_primary for t, r in results.items()}}
        print(f"[{index}/{len(grid)}] {point.name}: fitness {value:.4f}, objective "
              f"{points[point.name]['objective']:.4f} ({time.perf_counter() - started:.0f} s)",
              flush=True)
    return points


def best_of(points: dict[str, dict], method: str) -> str:
    mine = [n for n, p in points.items() if p["recipe"]["method"] == method]
    return max(mine, key=lambda n: points[n]["objective"])  # the first of equals: grid order


def table(models: dict[str, dict], weights: dict[str, float], skills: dict[str, str],
          guards: list[str], reference: str) -> list[str]:
    """The Markdown table: skills, fitness, guards, share of each specialist's own score,
    and the paired fitness difference against `reference`."""
    head = ["model", *weights, "fitness", *guards, *(f"share of {r}" for r in skills),
            f"fitness - {reference} [95% CI], p"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, model in models.items():
        shares = []
        for role, skill in skills.items():
            own = models[role]["scores"][skill]
            shares.append(f"{model['scores'][skill] / own:.2f}" if own > 0 else "-")
        diff = model.get("vs_reference")
        cell = "" if diff is None else (
            f"{diff['diff']:+.3f} [{diff['diff'] - 1.96 * diff['stderr']:+.3f}, "
            f"{diff['diff'] + 1.96 * diff['stderr']:+.3f}], p {p_text(diff['p'], diff['test'])}")
        row = [name, *(f"{model['scores'][t]:.3f}" for t in weights), f"{model['fitness']:.4f}",
               *(f"{model['scores'][g]:.3f}" for g in guards), *shares, cell]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="smollm2-specialists-trio")
    parser.add_argument("--cache", type=Path, default=Path(".cache"))
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--test-seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-trio"))
    args = parser.parse_args()
    started = time.perf_counter()
    problem = load_problem(args.problem)
    parents, tasks, trained = problem_parents(problem, args.cache, "cpu")
    roles = [r for r in parents if r != BASE]
    models = {role: read_tensors(parents[role]) for role in [*roles, BASE]}
    with ModelSource(parents[BASE]) as source:
        infos = Taxonomy(source.config).classify_all(source.specs())
        merger = StandardMerger(models=models, infos=infos, config=source.config)
    weights = problem.weights()
    scorer = Scorer(parents[BASE])
    search = {t: (tasks[t], "search", args.limit) for t in [*weights, *problem.guard]}
    base_scores = scorer.score(models[BASE], search)
    points = tune(merger, scorer, search, weights, problem.guard, base_scores)
    chosen = {method: best_of(points, method) for method in ("task_arithmetic", "ties",
                                                               "dare_ties")}
    test_sets = test_items(problem, tasks, args.out / "test-items", args.test_seed, "quick")
    test = {t: (s.name, s.split, s.limit) for t, s in test_sets.items()}
    states = {BASE: models[BASE], **{r: models[r] for r in roles}}
    ta1 = StandardRecipe(method="task_arithmetic", scale=1.0)
    for recipe in [ta1, *(StandardRecipe(**points[n]["recipe"]) for n in chosen.values())]:
        states.setdefault(recipe.name, merger.state(recipe))
    results = {}
    for name, state in states.items():
        print(f"test items: {name}", flush=True)
        scored = scorer.score(state, test)
        results[name] = {"scores": {t: r.signed_primary for t, r in scored.items()},
                         "fitness": fitness(scored, weights),
                         "items": {t: signed(r.item_scores, r.higher_is_better)
                                   for t, r in scored.items()}}
    reference = ta1.name
    for name, model in results.items():
        if name != reference:
            model["vs_reference"] = compare_weighted(
                {t: (model["items"][t], results[reference]["items"][t]) for t in weights},
                weights)
    skills = {role: problem.recipes()[role].skill for role in roles}
    lines = [f"# {problem.name}: standard recipes over {len(roles)} parents",
             "", f"`.venv/bin/python bench/bench_trio.py --problem {problem.name} --limit "
             f"{args.limit} --test-seed {args.test_seed}`; search items per task: "
             f"{args.limit}; chosen on the search split: "
             + ", ".join(f"{m} {n}" for m, n in chosen.items()), "",
             *table(results, weights, skills, list(problem.guard), reference), "",
             f"Wall time {time.perf_counter() - started:.0f} s; fine-tunes' training "
             f"(recorded): " + ", ".join(f"{r} {s:.0f} s" for r, s in trained.items())]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trio.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    record = {"problem": problem.name, "limit": args.limit, "test_seed": args.test_seed,
              "points": points, "chosen": chosen,
              "test": {n: {k: v for k, v in m.items() if k != "items"}
                       for n, m in results.items()}}
    (args.out / "trio.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
