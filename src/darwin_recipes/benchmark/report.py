"""The benchmark's tables (Markdown, for docs/BENCHMARKS.md's "Merge quality") and the bars
of its picture (`picture_bars`; darwin_merge/plots/benchmark.py draws them), read from the
problems' result.json records."""

from __future__ import annotations

import statistics

from darwin_merge.eval.paired import p_text
from darwin_merge.evolve.baselines import FIXED_GENOMES, FIXED_RECIPES
from darwin_merge.records import METHOD_WORDS
from darwin_merge.records.benchmark import ModelTest, ProblemResult, SeedComparison

# The picture's methods, in its order: the child, each tuned recipe's point chosen on the
# search split, the fixed baselines and the parents.
TUNED = {method: f"{words} (tuned)" for method, words in METHOD_WORDS.items()}
# the fixed baselines by their names in the run (evolve/baselines.py), as the picture says them
FIXED = {**{name: name.replace("dare_ties", "DARE-TIES").replace("_", " ")
            for name in FIXED_GENOMES},
         **{r.name: f"{METHOD_WORDS[r.method]} {r.scale:.1f}" for r in FIXED_RECIPES}}
REFERENCES = ("father", "mother", "base")


def children(result: ProblemResult) -> list[str]:
    return [n for n, m in result.models.items() if m.kind == "child"]


def child_fitness(result: ProblemResult) -> tuple[float, float]:
    """The children's test fitness: mean and SD over the seeds (SD 0 for one seed)."""
    values = [result.models[n].fitness for n in children(result)]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def method_rows(result: ProblemResult) -> dict[str, str]:
    """{the picture's method: the model's name} for the methods this problem has."""
    rows = {TUNED[f]: name for f, name in result.chosen.items() if f in TUNED}
    rows.update({label: name for name, label in FIXED.items() if name in result.models})
    rows.update({name: name for name in REFERENCES if name in result.models})
    return rows


def picture_bars(results: list[ProblemResult]) -> list[tuple[str, dict[str, list[ModelTest]]]]:
    """What the picture draws (plots/benchmark.py): per problem, {method: its models}, the
    child's one per seed first, then the seeds' CMA-ES starts (where scored)."""
    def starts(r: ProblemResult) -> dict[str, list[ModelTest]]:
        found = [m for m in r.models.values() if m.kind == "start"]
        return {"CMA-ES start": found} if found else {}

    return [(r.problem, {"child": [r.models[n] for n in children(r)], **starts(r),
                         **{method: [r.models[name]] for method, name in method_rows(r).items()}})
            for r in results]


def comparison_cell(c: SeedComparison) -> str:
    """`-0.012 [-0.040, +0.015], p 0.41`: mean over seeds, 95% CI over seeds and items."""
    return f"{c.diff:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}], p {p_text(c.p, c.test)}"


def summary_table(results: list[ProblemResult]) -> list[str]:
    """One row per problem: the child against the best tuned and best healthy tuned
    baseline (chosen on the search split), wall time and the machine's yardstick."""
    lines = ["| problem | seeds | child: test fitness (mean ± SD) | best tuned (search "
             "split) | child - best tuned, 95% CI | best healthy tuned | child - best "
             "healthy tuned, 95% CI | child - its CMA-ES start, 95% CI | wall time | "
             "yardstick |", "|---" * 10 + "|"]
    for r in results:
        mean, sd = child_fitness(r)
        cells = []
        for name in (r.best_tuned, r.best_healthy_tuned):
            if name is None:
                cells += ["none", ""]
            else:
                cells += [f"{name} {r.models[name].fitness:.3f}",
                          comparison_cell(r.comparisons[name])]
        cells.append(comparison_cell(r.cma_es_gain) if r.cma_es_gain else "")
        lines.append(f"| {r.problem} | {len(r.seeds)} | {mean:.3f} ± {sd:.3f} | "
                     + " | ".join(cells)
                     + f" | {r.seconds['total'] / 60:.0f} min | {r.yardstick_seconds:.2f} s |")
    return lines


def problem_table(r: ProblemResult) -> list[str]:
    """Every model of one problem on the test items, then the children against each."""
    tasks = list(r.tasks)
    head = " | ".join(f"{t} ({r.tasks[t].role}, {r.tasks[t].source}, n={r.tasks[t].n})"
                      for t in tasks)
    lines = [f"| model | {head} | fitness (test) | guards | health |",
             "|---" * (len(tasks) + 4) + "|"]
    order = children(r) + [n for n in r.models if n not in children(r)]
    for name in order:
        m = r.models[name]
        marks = [" (best tuned)" if name == r.best_tuned else "",
                 " (best healthy tuned)" if name == r.best_healthy_tuned else ""]
        guards = {None: "", True: "kept", False: "broken"}[m.guards_kept]
        lines.append(f"| {name}{''.join(marks)} | "
                     + " | ".join(f"{m.scores[t]:.3f}" for t in tasks)
                     + f" | {m.fitness:.4f} | {guards} | {m.health or ''} |")
    seeds = [f"seed {s}" for s in r.seeds]
    lines += ["", "Children minus each model on the test fitness: per seed, and the mean over "
              "seeds with a 95% interval resampling seeds and items together (hierarchical "
              "bootstrap, 10,000 resamples):", "",
              f"| against | {' | '.join(seeds)} | mean [95% CI], p |",
              "|---" * (len(seeds) + 2) + "|"]
    rows = {**r.comparisons, **({"its own CMA-ES start (what CMA-ES added)": r.cma_es_gain}
                                 if r.cma_es_gain else {})}
    for name, c in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{d:+.3f}" for d in c.per_seed)
                     + f" | {comparison_cell(c)} |")
    return lines


def specialist_check(result: ProblemResult, reference: ProblemResult | None,
                     skills: dict[str, str], share: float) -> str | None:
    """Whether each specialist of `result` reaches `share` of the reference problem's on its
    skill (the same test items), in a line; None without a reference run."""
    if reference is None:
        return None
    parts, valid = [], True
    for role, task in skills.items():
        mine, theirs = result.models[role].scores[task], reference.models[role].scores[task]
        ratio = mine / theirs if theirs else float("inf")
        valid &= ratio >= share
        parts.append(f"{role} {task} {mine:.3f} against {theirs:.3f} ({ratio:.2f}x)")
    verdict = "valid" if valid else f"INVALID (under {share}x: not a problem to win)"
    return (f"Specialists against {reference.problem}'s on the same test items: "
            + "; ".join(parts) + f": {verdict}.")


def markdown(results: list[ProblemResult], command: str,
             checks: dict[str, str | None] | None = None) -> str:
    """The whole report: the summary table, then each problem's tables."""
    first = results[0]
    lines = [f"Command: `{command}` ({first.mode} mode: {first.budget['trials']} candidates "
             f"on {first.budget.get('limit') or 'all'} search items per task; seeds "
             f"{', '.join(map(str, first.seeds))}; test seed {first.test_seed}), "
             f"{first.created[:10]}, darwin {first.darwin_version}.", "",
             *summary_table(results)]
    for r in results:
        fine_tunes = ", ".join(f"{role} {s / 60:.0f} min" for role, s in
                               r.fine_tune_seconds.items())
        times = ", ".join(f"{k} {v / 60:.1f} min" for k, v in r.seconds.items())
        lines += ["", f"#### {r.problem}", "", r.description, "",
                  *problem_table(r), "", f"Wall time: {times}"
                  + (f"; fine-tunes (trained once, cached; not in the total): {fine_tunes}"
                     if fine_tunes else "") + "."]
        if checks and checks.get(r.problem):
            lines += ["", checks[r.problem]]
    return "\n".join(lines) + "\n"
