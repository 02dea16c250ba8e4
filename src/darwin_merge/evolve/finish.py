"""After the search: the best healthy genome becomes the child, scored on held-out items
beside both parents and the two merges a user would otherwise pick."""

from __future__ import annotations

import datetime as dt
import shlex
import sys
from pathlib import Path

import optuna
import yaml

from .. import __version__
from ..eval.lm_eval_layout import lm_eval_layout
from ..eval.report import write_json
from ..eval.tasks import resolve_tasks
from ..genome import Genome
from ..merge.engine import merge_models
from ..merge.plan import MergeSettings
from .recipe import Recipe
from .scoring import CandidateScorer, fitness_of
from .search import BASELINES, proxy_spearman, say, scored_trials, versions
from .study import dump_json, trial_table

MAX_HEALTH_TRIES = 3


def ranked_genomes(study: optuna.Study) -> list[tuple[optuna.trial.FrozenTrial, Genome]]:
    trials = [t for t in scored_trials(study, 2) if t.user_attrs.get("duplicate_of") is None]
    trials.sort(key=lambda t: (-t.value, t.number))
    return [(t, Genome(**t.params)) for t in trials]


def holdout_table(recipe: Recipe, scorer: CandidateScorer, child_state,
                  baseline_states: dict) -> dict:
    """Every model on the holdout split of the fitness tasks and the extra tasks."""
    tasks = list(recipe.fitness) + [t for t in recipe.extra_tasks if t not in recipe.fitness]
    models = {"child": child_state, "father": scorer.parents.father,
              "mother": scorer.parents.mother, **baseline_states}
    table = {"tasks": {}, "models": {}}
    for name, state in models.items():
        say(f"holdout evaluation: {name}")
        scores = scorer.score_state(state, tasks, split="holdout", limit=recipe.holdout_limit)
        row = {t: {k: v for k, v in r.items() if k != "item_ids"} for t, r in scores.items()}
        row["fitness"] = fitness_of(scores, recipe.weights)
        table["models"][name] = row
        write_holdout_results(recipe, name, scores)
        for t, r in scores.items():
            table["tasks"][t] = {"n": r.get("n"), "metric": "acc", "shots": 0,
                                 "role": "fitness" if t in recipe.fitness else "extra"}
    return table


def write_holdout_results(recipe: Recipe, name: str, scores: dict) -> Path:
    """RUN_DIR/holdout/results_<model>.json: one model's holdout scores in lm-eval's layout."""
    config = {"split": "holdout", "limit": recipe.holdout_limit, "device": recipe.device,
              "dtype": recipe.dtype, "batch_size": recipe.batch_size}
    layout = lm_eval_layout(scores, resolve_tasks(list(scores)), model=name, config=config,
                            darwin={"darwin_version": __version__, "run": str(recipe.out)})
    return write_json(layout, Path(recipe.out) / "holdout" / f"results_{name}.json")


def pick_healthy(recipe: Recipe, study: optuna.Study, settings: MergeSettings,
                 scan_path: Path | None) -> tuple[optuna.trial.FrozenTrial, Genome, Path, dict]:
    """Merge the best genome to RUN_DIR/child and health-check it; an unhealthy child is
    rejected and the next best genome tried (docs/EVOLVE.md)."""
    from ..health import check_health

    ranked = ranked_genomes(study)
    if not ranked:
        raise RuntimeError("the search scored no candidate")
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
        health = check_health(child, recipe.father, recipe.mother, out=out / "health",
                              device=recipe.device, dtype=recipe.dtype, overwrite=True,
                              max_tokens=recipe.probe_max_tokens,
                              max_prompts=recipe.probe_max_prompts)
        if health.get("verdict") != "unhealthy":
            return trial, genome, child, health
        say(f"[red]child of trial {trial.number} is unhealthy[/red]: "
            f"{'; '.join(health.get('reasons', []))}; trying the next best genome")
    raise RuntimeError("no healthy child among the best genomes: see health/health.json")


def finish(recipe: Recipe, study: optuna.Study, scorer: CandidateScorer,
           settings: MergeSettings, scan_path: Path | None, phase1: dict,
           phase2_seconds: float) -> dict:
    out = Path(recipe.out)
    trial, genome, child, health = pick_healthy(recipe, study, settings, scan_path)
    (out / "best_genome.yaml").write_text(genome.to_yaml())
    child_state = scorer.child_state(genome)
    baselines = {name: scorer.child_state(g) for name, g in BASELINES.items()}
    holdout = holdout_table(recipe, scorer, child_state, baselines)
    rho, pairs = proxy_spearman(study)
    summary = {
        "darwin_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "darwin " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "father": str(recipe.father), "mother": str(recipe.mother),
        "base": str(recipe.base) if recipe.base else None,
        "device": recipe.device, "dtype": recipe.dtype,
        "fitness": recipe.weights, "limit": recipe.limit,
        "best": {"genome": genome.model_dump(), "genome_hash": trial.user_attrs["genome_hash"],
                 "trial": trial.number, "search_fitness": trial.value},
        "baselines": {name: g.model_dump() for name, g in BASELINES.items()},
        "phase1": {"steps": phase1["steps"], "seconds": phase1["seconds"],
                   "top_k": len(phase1["top_k"]), "spearman": rho, "pairs": pairs,
                   "stakes": phase1["stakes"]},
        "phase2": {"trials": len(scored_trials(study, 2)), "seconds": phase2_seconds},
        "holdout": holdout,
        "health": {k: health.get(k) for k in ("verdict", "reasons", "flagged_layers")},
        "scan": str(scan_path.relative_to(out)) if scan_path and scan_path.is_relative_to(out)
        else (str(scan_path) if scan_path else None),
        "child": "child",
        "versions": versions(),
    }
    dump_json(out / "summary.json", summary)
    (out / "recipe.yaml").write_text(yaml.safe_dump(
        json_safe(recipe.model_dump()), sort_keys=False))
    return summary


def json_safe(value):
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_records(recipe: Recipe, study: optuna.Study, phase1: dict) -> None:
    from .plot import plot_evolution

    out = Path(recipe.out)
    rows = trial_table(study)
    dump_json(out / "trials.json", rows)
    plot_evolution(rows, phase1.get("best_curve", []), out / "evolution.png")
