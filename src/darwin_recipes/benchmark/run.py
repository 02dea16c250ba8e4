"""`darwin bench quality`: each problem searched with several seeds, its child judged beside
the tuned standard recipes on test items nobody has looked at.

Per problem, in RUN_DIR/<problem>/: the parents (fine-tunes trained once, cached like the
demo's), one scan shared by every seed (scan/), one search per seed (seed-<s>/, resumed when
killed), the baselines tuned once on the search split (in the first seed's study), and every
model scored once on the test items (test/test-seed-<n>/<model>.json). The test
items: fresh ones for the synthetic skills, drawn from --test-seed (demo/test_items.py), and
the holdout split for the shipped tasks. result.json holds the scores and the comparisons.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from darwin_merge import __version__
from darwin_merge.errors import UsageError
from darwin_merge.eval.paired import hierarchical_bootstrap
from darwin_merge.evolve.baselines import HEALTH_ATTR, POINTS_ATTR, run_baselines
from darwin_merge.evolve.finish import pick_healthy
from darwin_merge.evolve.holdout import HoldoutJobs
from darwin_merge.evolve.recipe import Recipe, build_recipe, ensure_scan
from darwin_merge.evolve.run import Search, searched
from darwin_merge.evolve.scoring import GUARD_ITEMS_ATTR
from darwin_merge.evolve.study import CMA_ES_START, trial_genome
from darwin_merge.genome import Genome
from darwin_merge.io.files import dump_json
from darwin_merge.records import FineTuneRecord, file_names, read_record, record_json
from darwin_merge.records.benchmark import ModelTest, ProblemResult, SeedComparison, TestTask
from darwin_merge.resources import FAST_EVAL_DTYPE, matmul_yardstick

from ..demo.test_items import PUBLISHED_TEST_SEED
from . import say
from .problem import BASE, TINY, Problem, load_problem

# The quick mode: 24 candidates on 50 items per task (the budget the specialists pair was
# measured with on 2 cores), a scan of 16 items per task, 200 holdout items per shipped task.
QUICK_BUDGET = {"trials": 24, "limit": 50, "phase1_steps": 200, "top_k": 4, "popsize": 6,
                "probe_max_prompts": 10, "probe_max_tokens": 48, "scan_probe_sets": False,
                "scan_items": 16, "eval_dtype": FAST_EVAL_DTYPE, "batch_size": 32}
# The full mode: `make demo`'s budget (64 candidates on 100 items, a scan of 32 items).
FULL_BUDGET = {**QUICK_BUDGET, "trials": 64, "limit": 100, "scan_items": 32}
MODES = {"quick": QUICK_BUDGET, "full": FULL_BUDGET}
# Holdout items per shipped task on the test table (None: the whole split).
TEST_HOLDOUT_LIMIT = {"quick": 200, "full": None}
SEEDS = (0, 1, 2)
# The quick benchmark (`make bench-quality`): the three SmolLM2 problems.
QUICK_PROBLEMS = ("smollm2-specialists-disjoint", "smollm2-specialists-overlap",
                  "smollm2-father-mother")
# A specialist of an overlap problem must reach this share of the disjoint one's test score on
# its skill; under it the problem is invalid, not won.
SPECIALIST_SHARE = 0.9


@dataclass
class ToScore:
    """A model the test table needs: its state (or a function that merges it) and what its
    row says of it."""

    state: dict | Callable[[], dict]
    kind: str
    seed: int | None = None
    health: str | None = None
    method: str | None = None
    same_as: str | None = None  # another model of the table that makes the same merge


@dataclass
class TestSet:
    """Where a task's test items come from: the name the scorer knows it by (a fresh-item
    file's path), its split and limit, and its row of the record."""

    name: str
    split: str
    limit: int | None
    row: TestTask


def child_name(seed: int) -> str:
    return f"child (seed {seed})"


def start_name(seed: int) -> str:
    """The seed's CMA-ES start: the best healthy seed of its search (evolve/phase2.py)."""
    return f"CMA-ES start (seed {seed})"


def cma_es_start(search: Search, recipe: Recipe) -> tuple[Genome, str | None] | None:
    """The genome CMA-ES started from in this search and its health verdict (None when
    CMA-ES never started)."""
    number = search.study.user_attrs.get(CMA_ES_START)
    if number is None:
        return None
    trial = search.study.get_trials(deepcopy=False)[number]
    verdict = search.study.user_attrs.get("seed_health", {}).get(str(number))
    return trial_genome(trial, recipe.genome_rule), verdict


def run_benchmark(names: list[str], out: Path, cache: Path, mode: str = "quick",
                  seeds: tuple[int, ...] = SEEDS, test_seed: int = PUBLISHED_TEST_SEED,
                  device: str = "cpu", command: str = "make bench-quality", **budget
                  ) -> list[ProblemResult]:
    """Every problem in turn (each continued where a killed run stopped), then the report:
    RUN_DIR/quality.md and RUN_DIR/quality.png."""
    from darwin_merge.plots.benchmark import draw

    from .report import markdown, picture_bars

    problems = [load_problem(name) for name in names]  # an unknown one: before any work
    results = [run_problem(p, out, cache, mode, seeds, test_seed, device, **budget)
               for p in problems]
    checks = {p.name: specialists_line(p, results, out) for p in problems}
    table, picture = Path(out) / file_names.QUALITY_TABLE, Path(out) / file_names.QUALITY_PICTURE
    table.write_text(markdown(results, command, checks), encoding="utf-8")
    draw(picture_bars(results), picture)
    say(f"benchmark report: {table} and {picture}")
    return results


def specialists_line(problem: Problem, results: list[ProblemResult], out: Path) -> str | None:
    """For a problem with `specialists_of`: its specialists against the named problem's
    (run in this benchmark, or earlier in RUN_DIR with the same test seed)."""
    from .report import specialist_check

    if problem.specialists_of is None:
        return None
    mine = next(r for r in results if r.problem == problem.name)
    reference = next((r for r in results if r.problem == problem.specialists_of), None)
    path = Path(out) / problem.specialists_of / file_names.PROBLEM_RESULT
    if reference is None and path.is_file():
        reference = read_result(path.parent)
    if reference is None or reference.test_seed != mine.test_seed:
        return (f"Specialists not checked: {problem.specialists_of} has no result with test "
                f"seed {mine.test_seed} in {out}.")
    skills = {role: recipe.skill for role, recipe in problem.recipes().items()}
    return specialist_check(mine, reference, skills, SPECIALIST_SHARE)


def run_problem(problem: Problem, out: Path, cache: Path, mode: str = "quick",
                seeds: tuple[int, ...] = SEEDS, test_seed: int = PUBLISHED_TEST_SEED,
                device: str = "cpu", **budget) -> ProblemResult:
    """One problem, start to finish (or continued): its result.json's record."""
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r} (quick or full)")
    if problem.parents is not None:
        raise UsageError(f"{problem.name}: a problem of {len(problem.parents)} parents is not "
                         "searched yet (issue 38); bench/bench_trio.py measures its standard "
                         "recipes")
    if not seeds:
        raise UsageError("give at least one search seed")
    folder = Path(out) / problem.name
    values = {**MODES[mode], **problem.budget,
              **{k: v for k, v in budget.items() if v is not None}}
    if (folder / file_names.PROBLEM_RESULT).is_file():
        done = read_result(folder)
        if (done.mode, done.seeds, done.test_seed, done.budget) == (mode, list(seeds),
                                                                    test_seed, values):
            say(f"[bold]{problem.name}[/bold]: done before ({folder / file_names.PROBLEM_RESULT})")
            return done
    started = time.perf_counter()
    yardstick = matmul_yardstick()
    say(f"[bold]{problem.name}[/bold]: one-thread matmul yardstick {yardstick:.2f} s")
    parents, tasks, fine_tune_seconds = problem_parents(problem, cache, device)
    test_tasks = test_items(problem, tasks, folder / "test-items", test_seed, mode)
    seconds: dict[str, float] = {}

    def recipe_of(seed: int, **fields) -> Recipe:
        return build_recipe(**parents, fitness={tasks[t]: w for t, w in problem.fitness.items()},
                            guard={tasks[t]: g for t, g in problem.guard.items()},
                            device=device, seed=seed, **{**values, **fields})

    clock = time.perf_counter()
    scan = ensure_scan(recipe_of(seeds[0], out=folder, baselines="none"))
    seconds["scan"] = time.perf_counter() - clock
    models: dict[str, ModelTest] = {}
    best, shared = {}, {}
    for index, seed in enumerate(seeds):
        clock = time.perf_counter()
        recipe = recipe_of(seed, out=folder / f"seed-{seed}", scan=scan,
                           baselines=seed_baselines(index, values.get("genome_rule")))
        if shared:
            share_first_seed(recipe, shared)
        with searched(recipe) as search:
            shared = {k: search.study.user_attrs[k] for k in SHARED_ATTRS
                      if k in search.study.user_attrs}  # stored rows
            trial, genome, _, health, _ = pick_healthy(recipe, search.study, search.settings,
                                                       search.scan_path)
            seconds[f"seed {seed}"] = time.perf_counter() - clock
            todo = {child_name(seed): ToScore(search.scorer.child_state(genome), "child",
                                              seed, health["verdict"])}
            start = cma_es_start(search, recipe)
            if start is not None and start[0] != genome:
                todo[start_name(seed)] = ToScore(search.scorer.child_state(start[0]), "start",
                                                 seed, start[1])
            if index == 0:
                clock = time.perf_counter()
                others, best = reference_and_baselines(recipe, search)
                seconds["baselines"] = time.perf_counter() - clock
                todo.update(others)
            clock = time.perf_counter()
            models.update(score_on_test(search, folder / "test" / f"test-seed-{test_seed}",
                                        todo, test_tasks,
                                        problem.weights()))
            seconds[f"test {seed}"] = time.perf_counter() - clock
            if start is not None and start[0] == genome:  # CMA-ES found nothing better
                models[start_name(seed)] = models[child_name(seed)].model_copy(
                    update={"kind": "start"})
    seconds["total"] = time.perf_counter() - started
    result = problem_result(problem, mode, seeds, test_seed, values, test_tasks, models, best,
                            seconds, fine_tune_seconds, yardstick)
    dump_json(folder / file_names.PROBLEM_RESULT, record_json(result))
    return result


# What a later seed's study takes from the first seed's: the parents' search-split scores
# (and their per-item guard scores), the tuned baselines' points and health verdicts (the
# same models on the same items: the search items do not depend on the seed).
SHARED_ATTRS = ("parent_search_scores", GUARD_ITEMS_ATTR, POINTS_ATTR, HEALTH_ATTR)


def seed_baselines(index: int, genome_rule: str | None) -> str:
    """The first seed tunes the baselines; under genome rule v3 every seed reads them back
    (shared from the first seed's study), since its search starts from their chosen points."""
    return "tuned" if index == 0 or genome_rule == "v3" else "none"


def share_first_seed(recipe: Recipe, attrs: dict) -> None:
    """Give a seed's study what the first seed's scored once (SHARED_ATTRS), so that each
    seed does not score it again."""
    import optuna

    from darwin_merge.evolve.study import open_study, quiet_optuna

    Path(recipe.out).mkdir(parents=True, exist_ok=True)
    with quiet_optuna():
        study = open_study(recipe, optuna.samplers.RandomSampler(seed=recipe.seed))
        for key, value in attrs.items():
            if key not in study.user_attrs:
                study.set_user_attr(key, value)


def problem_parents(problem: Problem, cache: Path, device: str
                    ) -> tuple[dict, dict[str, str], dict[str, float]]:
    """The recipe's father, mother and base; each task's name as the recipe gives it (the
    tiny trio's are its files' paths); each fine-tune's training seconds (from its record,
    whether trained now or before)."""
    if problem.family == TINY:
        from ..demo.tiny import prepare_tiny_pair, task_paths

        folder = prepare_tiny_pair(cache)
        tasks = {stem: str(path) for stem, path in task_paths(folder).items()}
        parents = {"father": folder / "father", "mother": folder / "mother",
                   "base": folder / "base" if problem.merge_with_base else None}
        return parents, {t: tasks.get(t, t) for t in problem.tasks()}, {}
    from darwin_merge.realmodels import ensure_real_model

    from ..demo.mother import prepare_mother

    base = ensure_real_model(problem.family, cache)
    parents, trained = {}, {}
    for role, spec in problem.roles().items():
        if spec == BASE:
            parents[role] = base
            continue
        say(f"{role}: {problem.family} fine-tuned on {spec['skill']} (cached after the "
            "first run)")
        parents[role] = prepare_mother(base, cache, problem.recipes()[role], device=device)
        record = read_record(FineTuneRecord, parents[role] / file_names.FINE_TUNE_RECORD)
        trained[role] = float(record.seconds)
    parents["base"] = base if problem.merge_with_base else None
    return parents, {t: t for t in problem.tasks()}, trained


def test_items(problem: Problem, tasks: dict[str, str], folder: Path, test_seed: int,
               mode: str) -> dict[str, TestSet]:
    """{problem's task: its TestSet} for the fitness and guard tasks: a synthetic skill's
    fresh items (written to `folder`), else the holdout."""
    from darwin_merge.eval.tasks import task_metric

    from ..demo.test_items import fresh_items, write_items

    found = {}
    roles = {t: "fitness" for t in problem.fitness}
    roles.update({t: "guard" for t in problem.guard if t not in roles})
    for task, role in roles.items():
        if task in problem.test:
            path = folder / f"seed-{test_seed}" / f"{task}.jsonl"
            items = fresh_items(task, test_seed, problem.test[task], excluded_recipes())
            write_items(items, path)
            found[task] = TestSet(str(path), "all", None, TestTask(
                label=task, role=role, source=f"fresh items (test seed {test_seed})",
                n=len(items), metric=task_metric(str(path))[0]))
        else:
            limit = TEST_HOLDOUT_LIMIT[mode]  # n: the real count, known once scored
            found[task] = TestSet(tasks[task], "holdout", limit, TestTask(
                label=task, role=role, source="holdout", n=limit or 0,
                metric=task_metric(tasks[task])[0]))
    return found


def excluded_recipes() -> list:
    """The fine-tunes whose training problems fresh test items leave out: every shipped
    problem's and every demo's."""
    from ..demo.run import demo_recipes
    from .problem import all_fine_tune_recipes

    return [*all_fine_tune_recipes(), *demo_recipes()]


def reference_and_baselines(recipe: Recipe, search: Search) -> tuple[dict, dict]:
    """The models scored once per problem (the parents, the base, every baseline) as
    {name: (state or its merge, kind, None, health)}, and the names of the best tuned
    baselines."""
    baselines = run_baselines(recipe, search.scorer, search.study)
    todo = {name: ToScore(getattr(search.scorer.parents, name), "reference")
            for name in search.scorer.references()}
    health = baselines.record.health or {}
    for name, candidate in baselines.candidates.items():
        todo[name] = ToScore(partial(search.scorer.state_of, candidate), "baseline",
                             health=health.get(name), method=getattr(candidate, "method", name),
                             same_as=baselines.same_merge.get(name))
    record = baselines.record
    return todo, {"best_tuned": record.best_tuned, "best_healthy_tuned": record.best_healthy_tuned,
                  "chosen": record.chosen, "healthy": record.healthy}


def score_on_test(search: Search, folder: Path, todo: dict, test_tasks: dict,
                  weights: dict[str, float]) -> dict[str, ModelTest]:
    """Each model's test scores: read back when kept by an earlier run, else scored now (the
    models of one call together) and kept (test/test-seed-<n>/<model>.json)."""
    found, missing = {}, {}
    for name, model in todo.items():
        path = folder / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}.json"
        if path.is_file():
            found[name] = ModelTest.model_validate_json(path.read_text(encoding="utf-8"))
        else:
            missing[name] = (model, path)
    if not missing:
        return found
    jobs = HoldoutJobs({name: m.state for name, (m, _) in missing.items()},
                       {t.name: t.limit for t in test_tasks.values()},
                       {t.name: t.split for t in test_tasks.values()}, label="test",
                       same_as={n: m.same_as for n, (m, _) in missing.items() if m.same_as})
    done = jobs.run(search.scorer)
    for name, (wanted, path) in missing.items():
        results = {task: done[name, t.name] for task, t in test_tasks.items()}
        scores = {task: r.signed_primary for task, r in results.items()}
        fitness = sum(w * scores[task] for task, w in weights.items())
        model = ModelTest(kind=wanted.kind, seed=wanted.seed, method=wanted.method,
                          scores=scores, fitness=fitness, health=wanted.health,
                          item_scores={t: r.item_scores for t, r in results.items()})
        dump_json(path, record_json(model))
        found[name] = model
    return found


def problem_result(problem: Problem, mode: str, seeds: tuple[int, ...], test_seed: int,
                   budget: dict, test_tasks: dict, models: dict[str, ModelTest], best: dict,
                   seconds: dict, fine_tune_seconds: dict, yardstick: float) -> ProblemResult:
    """The record: every model with its guard verdict, and the children against each other
    model (per seed, and over seeds and items together)."""
    scored = next(iter(models.values()))
    tasks = {task: t.row.model_copy(update={"n": len(scored.item_scores[task])})
             for task, t in test_tasks.items()}
    references = [n for n in ("base",) if n in models] or [
        n for n in ("father", "mother") if n in models]
    models = {name: m.model_copy(update={"guards_kept": guards_kept(m, models, references,
                                                                    problem.guard)})
              for name, m in models.items()}
    children = [models[child_name(s)] for s in seeds]
    comparisons = {name: seed_comparison(children, [other] * len(seeds), problem.weights())
                   for name, other in models.items() if other.kind not in ("child", "start")}
    starts = [models.get(start_name(s)) for s in seeds]
    gain = (seed_comparison(children, starts, problem.weights())
            if all(starts) else None)
    return ProblemResult(
        problem=problem.name, description=problem.description, mode=mode, seeds=list(seeds),
        test_seed=test_seed, budget=budget, tasks=tasks, models=models,
        comparisons=comparisons, cma_es_gain=gain,
        seconds={k: round(v, 1) for k, v in seconds.items()},
        fine_tune_seconds=fine_tune_seconds, yardstick_seconds=round(yardstick, 2),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        darwin_version=__version__, **best)


def guards_kept(model: ModelTest, models: dict[str, ModelTest], references: list[str],
                tolerances: dict[str, float]) -> bool | None:
    """Whether a model stays within every guard's tolerance of the reference (the base, or
    without one the better parent) on the test items (None: no guard)."""
    if not tolerances:
        return None
    return all(model.scores[task] >= max(models[r].scores[task] for r in references) - tol
               for task, tol in tolerances.items())


def seed_comparison(children: list[ModelTest], others: list[ModelTest],
                    weights: dict[str, float]) -> SeedComparison:
    """The children (one per seed) minus the other model of the same seed (one model for
    all, or each seed's own, e.g. its CMA-ES start) on the fitness, per seed and over seeds
    and items (eval/paired.py's hierarchical bootstrap)."""
    pairs = list(zip(children, others, strict=True))
    diffs = {task: np.array([np.subtract(c.item_scores[task], o.item_scores[task])
                             for c, o in pairs]) for task in weights}
    stats = hierarchical_bootstrap(diffs, weights)
    return SeedComparison(per_seed=[c.fitness - o.fitness for c, o in pairs],
                          **{k: stats[k] for k in ("diff", "stderr", "ci_low", "ci_high", "p",
                                                   "test")})


def read_result(folder: Path) -> ProblemResult:
    return read_record(ProblemResult, folder / file_names.PROBLEM_RESULT)
