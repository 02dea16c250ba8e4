"""After the search: the best healthy genome becomes the child, scored on held-out items
beside both parents and the two merges a user would otherwise pick."""

from __future__ import annotations

import copy
import datetime as dt
import shlex
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import optuna
import torch
import yaml

from .. import __version__
from ..errors import SearchError
from ..eval import paired
from ..eval.lm_eval_layout import lm_eval_layout
from ..eval.report import write_layout
from ..eval.samples import date_id, task_hashes, write_samples
from ..eval.tasks import resolve_tasks
from ..genome import Genome
from ..io.files import dump_json
from ..io.writer import atomic_output_dir
from ..merge.engine import merge_models
from ..merge.plan import MergeSettings
from ..records import (
    HealthRejected,
    HealthVerdict,
    Phase1Summary,
    SummaryRecord,
    Trials,
    record_json,
)
from . import say
from .baselines import POINTS_ATTR, Baselines, run_baselines
from .gate import (
    MAX_HEALTH_TRIES,
    SEED_FINDINGS,
    child_health,
    health_accepted,
    health_findings,
    rejected_by_health,
)
from .recipe import Recipe
from .scoring import (
    CandidateScorer,
    ScoringJob,
    fitness_of,
    guard_verdicts,
    score_concurrently,
)
from .study import (
    phase2_summary,
    proxy_spearman,
    ranked_trials,
    scored_trials,
    trial_best,
    trial_table,
)


def ranked_genomes(study: optuna.Study) -> list[tuple[optuna.trial.FrozenTrial, Genome]]:
    return [(t, Genome(**t.params)) for t in ranked_trials(scored_trials(study, 2))]


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

    def run(self, scorer: CandidateScorer) -> dict[tuple[str, str], dict]:
        """Every (model, task)'s result, each twin's a copy of the scored model's."""
        done = score_concurrently(scorer, self.jobs())
        for name, twin in self.same_as.items():
            say(f"{self.label} evaluation: {name} makes the same merge as {twin}; "
                "its scores are copied")
            done.update({(name, task): copy.deepcopy(done[twin, task]) for task in self.limits})
        return done

    def score(self, name: str, task: str, worker: CandidateScorer) -> dict:
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
                  baseline_states: dict, same_merge: dict[str, str] | None = None) -> dict:
    """Every model on the holdout split of the fitness, guard and extra tasks, and the
    child's paired comparison with each of them (docs/EVOLVE.md); a baseline that makes
    another's merge (`same_merge`) is scored once."""
    roles = task_roles(recipe)
    references = {name: getattr(scorer.parents, name) for name in scorer.references()}
    models = {"child": child_state, **references, **baseline_states}
    done = HoldoutJobs(models, {task: recipe.holdout_limit_of(task) for task in roles},
                       same_as=same_merge).run(scorer)
    results = {name: {task: done[name, task] for task in roles} for name in models}
    table = {"tasks": {}, "models": {}, "comparisons": {}}
    items = {}
    for name, scores in results.items():
        logged = {t: r.pop("logged_samples") for t, r in scores.items()}
        items[name] = {t: (r["item_ids"], r["item_scores"]) for t, r in scores.items()}
        row = {t: {k: v for k, v in r.items() if k not in ("item_ids", "item_scores")}
               for t, r in scores.items()}
        row["fitness"] = fitness_of(scores, recipe.weights)
        table["models"][name] = row
        write_holdout_results(recipe, name, scores, logged)
        for t, r in scores.items():
            table["tasks"][t] = {"n": r["n"], "metric": r["metric"],
                                 "higher_is_better": r["higher_is_better"], "shots": 0,
                                 "role": roles[t]}
    for name in models:
        if name != "child":
            table["comparisons"][name] = child_against(items["child"], items[name],
                                                       recipe.weights)
    return table


def search_split_fitness(recipe: Recipe, study: optuna.Study, child: optuna.trial.FrozenTrial,
                         scorer: CandidateScorer, baselines: Baselines) -> dict[str, float]:
    """The fitness on the search split (the items every candidate was scored on) of the
    child, the references and the baselines: the child's and the references' from the
    search's own scores, a tuned baseline's from its tuning, the others scored now (the
    search never merges them)."""
    references = study.user_attrs["parent_search_scores"]
    tuned = {name: point["scores"] for name, point in
             study.user_attrs.get(POINTS_ATTR, {}).items()
             if name in baselines.candidates and point["race"]["outcome"] == "full"}
    tasks = list(recipe.weights)
    todo = [name for name in baselines.candidates if name not in tuned]
    if todo:
        say(f"search split: {', '.join(todo)} on the items the candidates saw")
    scored = score_concurrently(scorer, {
        name: partial(_score_state, baselines.candidates[name], tasks) for name in todo})
    scores = {"child": child.user_attrs["scores"],
              **{name: references[name] for name in scorer.references()},
              **{name: {**tuned, **scored}[name] for name in baselines.candidates}}
    return {name: fitness_of(s, recipe.weights) for name, s in scores.items()}


def _score_state(candidate, tasks: list[str], worker: CandidateScorer) -> dict:
    return worker.score_state(worker.state_of(candidate), tasks)


def score_cell(result: dict) -> str:
    """One task's primary score in a table: `0.730 ± 0.031`."""
    metric = result["metric"]
    stderr = result.get(f"{metric}_stderr")
    return f"{result[metric]:.3f}" + ("" if stderr is None else f" ± {stderr:.3f}")


def task_labels(tasks) -> dict[str, str]:
    """Column titles of the tables: a task file named by its path shows its file name only,
    unless another task of the table has the same file name."""
    tasks = list(tasks)
    names = [Path(t).name if t.endswith(".jsonl") else t for t in tasks]
    return {t: name if names.count(name) == 1 else t
            for t, name in zip(tasks, names, strict=True)}


def search_split_line(fitness: dict[str, float], limit: int | None) -> str:
    """The search split's fitness of each model and the child's lead over it, in a line."""
    child = fitness["child"]
    others = ", ".join(f"{name} {value:.4f} ({child - value:+.4f})"
                       for name, value in fitness.items() if name != "child")
    return (f"Search split ({limit or 'all'} items per fitness task, where the child was "
            f"chosen: its lead there is biased upward), fitness: child {child:.4f}; "
            f"{others}.")


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
    holdout = Path(recipe.out) / "holdout"
    if samples:
        with atomic_output_dir(holdout / f"samples_{name}", overwrite=True) as folder:
            write_samples(samples, folder, date_id())
        layout["task_hashes"] = task_hashes(samples)
    return write_layout(layout, holdout / f"results_{name}.json")


def pick_healthy(recipe: Recipe, study: optuna.Study, settings: MergeSettings,
                 scan_path: Path | None
                 ) -> tuple[optuna.trial.FrozenTrial, Genome, Path, dict, list[HealthRejected]]:
    """Merge the best genome to RUN_DIR/child and health-check it; an unhealthy child is
    rejected and the next best genome tried (docs/EVOLVE.md). Also returns every candidate
    ranked above the child that the gate rejected (before CMA-ES or here), with its
    findings: the gate's effect on the result, disclosed in the reports."""

    ranked = ranked_genomes(study)
    if not ranked:
        raise SearchError("the search scored no candidate (a --timeout too short?); "
                          "run the same command again to continue it")
    rejected = rejected_by_health(study, recipe.allow_warning)
    seed_findings = study.user_attrs.get(SEED_FINDINGS, {})
    verdicts = study.user_attrs.get("seed_health", {})
    passed_over: list[HealthRejected] = []
    for trial, _ in ranked:
        if trial.number in rejected:
            say(f"trial {trial.number} (fitness {trial.value:.4f}) left out: its child failed "
                "the health check before CMA-ES started")
            found = seed_findings.get(str(trial.number), {"verdict": verdicts[str(trial.number)]})
            passed_over.append(HealthRejected(trial=trial.number, search_fitness=trial.value,
                                              **found))
    ranked = [(trial, genome) for trial, genome in ranked if trial.number not in rejected]
    out = Path(recipe.out)
    health = {}
    for trial, genome in ranked[:MAX_HEALTH_TRIES]:
        say(f"merging the best genome (trial {trial.number}, fitness {trial.value:.4f}) "
            "into child/")
        child = merge_models(recipe.father, recipe.mother, out / "child", base=recipe.base,
                             genome=genome, scan=scan_path,
                             settings=settings, device=recipe.device, overwrite=True,
                             progress=False)
        say("health check of the child against both parents")
        health = child_health(recipe, child, out=out / "health", overwrite=True)
        if health_accepted(health["verdict"], recipe.allow_warning):
            above = [r for r in passed_over if r.search_fitness > trial.value]
            return trial, genome, child, health, above
        passed_over.append(HealthRejected(trial=trial.number, search_fitness=trial.value,
                                          **health_findings(health)))
        say(f"[red]child of trial {trial.number} is {health['verdict']}[/red]: "
            f"{'; '.join(health['reasons'])}; trying the next best genome")
    raise SearchError(f"no healthy child among the {MAX_HEALTH_TRIES} best genomes (see "
                      f"{out / 'health' / 'health.json'}; --allow-warning keeps a child "
                      "whose only finding is interference)")


def finish(recipe: Recipe, study: optuna.Study, scorer: CandidateScorer,
           settings: MergeSettings, scan_path: Path | None, phase1: dict,
           phase2_seconds: float) -> dict:
    out = Path(recipe.out)
    trial, genome, child, health, passed_over = pick_healthy(recipe, study, settings,
                                                             scan_path)
    (out / "best_genome.yaml").write_text(genome.to_yaml())
    child_state = scorer.child_state(genome)
    baselines = run_baselines(recipe, scorer, study)
    holdout = holdout_table(recipe, scorer, child_state, {
        name: partial(scorer.state_of, c) for name, c in baselines.candidates.items()},
        same_merge=baselines.same_merge)
    search_split = search_split_fitness(recipe, study, trial, scorer, baselines)
    rho, pairs = proxy_spearman(study)
    rho_full, pairs_full = proxy_spearman(study, fully_scored_only=True)
    parents_holdout = {p: holdout["models"][p] for p in scorer.references()}
    summary = SummaryRecord(
        darwin_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        command="darwin " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        father=str(recipe.father), mother=str(recipe.mother),
        base=str(recipe.base) if recipe.base else None,
        device=recipe.device, dtype=recipe.dtype, eval_dtype=recipe.forward_dtype,
        fitness=recipe.weights, limit=recipe.limit,
        best=trial_best(trial, genome.model_dump()),
        baselines={name: c.model_dump() for name, c in baselines.candidates.items()
                   if isinstance(c, Genome)},
        baseline_search=baselines.record,
        phase1=Phase1Summary(steps=phase1["steps"], seconds=phase1["seconds"],
                             proxy_model=phase1["proxy_model"],
                             top_k=len(phase1["top_k"]), spearman=rho, pairs=pairs,
                             spearman_full=rho_full, pairs_full=pairs_full,
                             stakes=phase1["stakes"]),
        phase2=phase2_summary(study, recipe.popsize, phase2_seconds,
                              rejected_by_health(study, recipe.allow_warning)),
        holdout=holdout,
        search_split=search_split,
        holdout_limit=recipe.holdout_limit,
        fitness_holdout_limit=recipe.fitness_holdout_limit,
        guard=guard_verdicts(holdout["models"]["child"], recipe.guard, parents_holdout),
        health=HealthVerdict(verdict=health["verdict"], reasons=health["reasons"],
                             flagged_layers=health["flagged_layers"]),
        rejected_by_health=passed_over,
        scan=str(scan_path.relative_to(out)) if scan_path and scan_path.is_relative_to(out)
        else (str(scan_path) if scan_path else None),
        child="child",
        versions=versions(),
    )
    dump_json(out / "summary.json", record_json(summary))
    (out / "recipe.yaml").write_text(yaml.safe_dump(
        json_safe(recipe.model_dump()), sort_keys=False))
    return record_json(summary)


def json_safe(value):
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_records(recipe: Recipe, study: optuna.Study, phase1: dict) -> None:
    from ..plots.evolution import plot_evolution

    out = Path(recipe.out)
    rows = trial_table(study)
    dump_json(out / "trials.json", record_json(Trials.model_validate(rows)))
    plot_evolution(rows, phase1["best_curve"], out / "evolution.png")


def versions() -> dict:
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "optuna": optuna.__version__,
            "darwin": __version__}
