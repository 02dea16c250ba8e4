"""The finish's scoring on held-out items: every model of the run (the child, the parents, the
base, the baselines) on the holdout split, the child's paired comparison with each, the
search-split fitness beside it, and each model's results in lm-eval's layout
(RUN_DIR/holdout/)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import optuna

from .. import __version__
from ..eval import paired
from ..eval.lm_eval_layout import lm_eval_layout
from ..eval.report import write_layout
from ..eval.results import TaskResult, rows, stored
from ..eval.samples import date_id, task_hashes, write_samples
from ..eval.tasks import resolve_tasks
from ..io.writer import atomic_output_dir
from ..records import file_names
from . import say
from .baselines import POINTS_ATTR, Baselines
from .recipe import Recipe
from .scoring import (
    CandidateScorer,
    ScoringJob,
    fitness_of,
    parent_search_scores,
    read_scores,
    score_concurrently,
)


def task_roles(recipe: Recipe) -> dict[str, str]:
    """Every task of the holdout table and its role: fitness, guard or extra."""
    roles = {t: "fitness" for t in recipe.fitness}
    roles.update({t: "guard" for t in recipe.guard if t not in roles})
    roles.update({t: "extra" for t in recipe.extra_tasks if t not in roles})
    return roles


class HoldoutJobs:
    """The holdout's work as one job per model and task (`score_concurrently` runs them):
    with one job per model, the last model of an odd count would run alone on one thread.
    A worker loads a model's tensors only when its skeleton holds another model's. A model
    is a state dict, or a function that merges it (the baselines: merged when loaded, so
    that they are not all held at once). A model in `same_as` makes the same merge as the
    model it names: it is not scored again, and `run` gives it a copy of that one's scores."""

    def __init__(self, models: dict[str, dict | Callable[[], dict]],
                 limits: dict[str, int | None], splits: dict[str, str] | None = None,
                 label: str = "holdout", same_as: dict[str, str] | None = None):
        self.models, self.limits = models, limits  # limits: each task's number of items
        self.splits = splits or {}  # a task's split when not the holdout (benchmark/)
        self.label = label  # what the progress lines call the evaluation
        self.same_as = {n: m for n, m in (same_as or {}).items() if n in models and m in models}
        self.loaded: dict[int, str] = {}  # id of a worker -> the model in its skeleton

    def jobs(self) -> dict[tuple[str, str], ScoringJob]:
        return {(name, task): partial(self.score, name, task)
                for name in self.models if name not in self.same_as for task in self.limits}

    def run(self, scorer: CandidateScorer) -> dict[tuple[str, str], TaskResult]:
        """Every (model, task)'s result; a twin gets the scored model's (results are frozen,
        so one object serves both)."""
        done = score_concurrently(scorer, self.jobs())
        for name, twin in self.same_as.items():
            say(f"{self.label} evaluation: {name} makes the same merge as {twin}; "
                "its scores are copied")
            done.update({(name, task): done[twin, task] for task in self.limits})
        return done

    def score(self, name: str, task: str, worker: CandidateScorer) -> TaskResult:
        """One model's holdout score on one task, with its per-item records."""
        if task == next(iter(self.limits)):  # each model's first job says it starts
            say(f"{self.label} evaluation: {name}")
        if self.loaded.get(id(worker)) != name:
            model = self.models[name]
            worker.load(model() if callable(model) else model)
            self.loaded[id(worker)] = name
        return worker.evaluate_loaded_tasks([task], self.splits.get(task, "holdout"),
                                            self.limits[task], log_samples=True)[task]


def holdout_table(recipe: Recipe, scorer: CandidateScorer, child_state,
                  baseline_states: dict, same_merge: dict[str, str] | None = None
                  ) -> tuple[dict, dict[str, dict[str, TaskResult]]]:
    """Every model on the holdout split of the fitness, guard and extra tasks, and the
    child's paired comparison with each of them (docs/EVOLVE.md); a baseline that makes
    another's merge (`same_merge`) is scored once. Returns the summary's table and each
    model's results."""
    roles = task_roles(recipe)
    references = {name: getattr(scorer.parents, name) for name in scorer.references()}
    models = {"child": child_state, **references, **baseline_states}
    done = HoldoutJobs(models, {task: recipe.holdout_limit_of(task) for task in roles},
                       same_as=same_merge).run(scorer)
    results = {name: {task: done[name, task] for task in roles} for name in models}
    table = {"tasks": {}, "models": {}, "comparisons": {}}
    items = {}
    for name, scores in results.items():
        items[name] = {t: (r.item_ids, r.item_scores) for t, r in scores.items()}
        table["models"][name] = {**rows(scores), "fitness": fitness_of(scores, recipe.weights)}
        write_holdout_results(recipe, name, stored(scores),
                              {t: r.logged_samples for t, r in scores.items()})
        for t, r in scores.items():
            table["tasks"][t] = {"n": r.n, "metric": r.metric,
                                 "higher_is_better": r.higher_is_better, "shots": 0,
                                 "role": roles[t]}
    for name in models:
        if name != "child":
            table["comparisons"][name] = child_against(items["child"], items[name],
                                                       recipe.weights)
    return table, results


def search_split_fitness(recipe: Recipe, study: optuna.Study, child: optuna.trial.FrozenTrial,
                         scorer: CandidateScorer, baselines: Baselines) -> dict[str, float]:
    """The fitness on the search split (the items every candidate was scored on) of the
    child, the references and the baselines: the child's and the references' from the
    search's own scores, a tuned baseline's from its tuning, the others scored now (the
    search never merges them)."""
    references = parent_search_scores(study)
    tuned = {name: read_scores(point["scores"], name) for name, point in
             study.user_attrs.get(POINTS_ATTR, {}).items()
             if name in baselines.candidates and point["race"]["outcome"] == "full"}
    tasks = list(recipe.weights)
    todo = [name for name in baselines.candidates if name not in tuned]
    if todo:
        say(f"search split: {', '.join(todo)} on the items the candidates saw")
    scored = score_concurrently(scorer, {
        name: partial(_score_state, baselines.candidates[name], tasks) for name in todo})
    scores = {"child": read_scores(child.user_attrs["scores"], "the child"),
              **{name: references[name] for name in scorer.references()},
              **{name: {**tuned, **scored}[name] for name in baselines.candidates}}
    return {name: fitness_of(s, recipe.weights) for name, s in scores.items()}


def _score_state(candidate, tasks: list[str], worker: CandidateScorer) -> dict:
    return worker.score_state(worker.state_of(candidate), tasks)


def child_against(child: dict, other: dict, weights: dict[str, float]) -> dict:
    """The child minus another model on the same holdout items, per task and on the
    fitness (weighted primary metrics, without the tie-breaker)."""
    pairs = {}
    for task, (ids, scores) in child.items():
        if other[task][0] != ids:
            raise RuntimeError(f"holdout items of {task} differ between models")
        pairs[task] = (scores, other[task][1])
    result = {task: paired.compare(*pair) for task, pair in pairs.items()}
    result["fitness"] = paired.compare_weighted({t: pairs[t] for t in weights}, weights)
    return result


def write_holdout_results(recipe: Recipe, name: str, scores: dict,
                          samples: dict[str, list[dict]] | None = None) -> Path:
    """RUN_DIR/holdout/results_<model>.json: one model's holdout scores in lm-eval's layout;
    with `samples` (eval/samples.py), its per-item records in RUN_DIR/holdout/samples_<model>/
    as `samples_<task>_<date>.jsonl` (the folder replaced whole)."""
    config = {"split": "holdout", "limit": recipe.holdout_limit,
              "fitness_limit": recipe.fitness_holdout_limit, "device": recipe.device,
              "dtype": recipe.forward_dtype, "batch_size": recipe.batch_size}
    layout = lm_eval_layout(scores, resolve_tasks(list(scores)), model=name, config=config,
                            darwin={"darwin_version": __version__, "run": str(recipe.out)})
    holdout = Path(recipe.out) / file_names.HOLDOUT_DIR
    if samples:
        with atomic_output_dir(holdout / f"samples_{name}", overwrite=True) as folder:
            write_samples(samples, folder, date_id())
        layout["task_hashes"] = task_hashes(samples)
    return write_layout(layout, holdout / f"results_{name}.json")
