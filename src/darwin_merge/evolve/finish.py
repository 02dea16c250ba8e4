"""After the search: the best healthy genome becomes the child (the health gate passes over
an unhealthy one), is scored on held-out items beside the parents and the baselines
(holdout.py), and the run's records are written: summary.json, recipe.yaml, trials.json,
evolution.png."""

from __future__ import annotations

import datetime as dt
import shlex
import sys
from functools import partial
from pathlib import Path

import optuna
import torch
import yaml

from .. import __version__
from ..errors import SearchError
from ..genome import Genome
from ..io.files import dump_json
from ..merge.engine import merge_models
from ..merge.plan import MergeSettings
from ..records import (
    HealthRejected,
    HealthVerdict,
    Phase1Summary,
    SummaryRecord,
    Trials,
    file_names,
    record_json,
)
from . import racing, say
from .baselines import run_baselines
from .front import front_candidates, pareto_front, preferred
from .gate import (
    MAX_HEALTH_TRIES,
    SEED_FINDINGS,
    child_health,
    health_accepted,
    health_findings,
    rejected_by_health,
)
from .holdout import holdout_table, search_split_fitness
from .recipe import Recipe
from .scoring import CandidateScorer, guard_verdicts
from .study import (
    phase2_summary,
    proxy_spearman,
    ranked_trials,
    scored_trials,
    trial_best,
    trial_genome,
    trial_table,
)


def ranked_genomes(study: optuna.Study, recipe: Recipe
                   ) -> list[tuple[optuna.trial.FrozenTrial, Genome]]:
    """The fully scored candidates in the order the child is chosen (`--prefer`:
    evolve/front.py), with their genomes."""
    ranked = ranked_trials(scored_trials(study, 2))
    if recipe.prefer != "fitness" and ranked:
        by_number = {t.number: t for t in ranked}
        order = preferred(front_candidates(study, ranked, recipe.allow_warning), recipe.prefer,
                          racing.incumbent_stderr(ranked[0].user_attrs, recipe.weights)
                          if "item_scores" in ranked[0].user_attrs else None)
        ranked = [by_number[n] for n in order]
    return [(t, trial_genome(t, recipe.genome_rule)) for t in ranked]


def front_of(study: optuna.Study, recipe: Recipe) -> list[int] | None:
    """The Pareto front's trials (fittest first), where the candidates' probe excess was
    measured (None where none was: a tiny model's probes judge no function)."""
    candidates = front_candidates(study, ranked_trials(scored_trials(study, 2)),
                                  recipe.allow_warning)
    if all(c.excess is None for c in candidates):
        return None
    return [c.number for c in pareto_front(candidates)]


def pick_healthy(recipe: Recipe, study: optuna.Study, settings: MergeSettings,
                 scan_path: Path | None
                 ) -> tuple[optuna.trial.FrozenTrial, Genome, Path, dict, list[HealthRejected]]:
    """Merge the best genome to RUN_DIR/child and health-check it; an unhealthy child is
    rejected and the next best genome tried (docs/EVOLVE.md). Also returns every candidate
    ranked above the child that the gate rejected (before CMA-ES or here), with its
    findings: the gate's effect on the result, disclosed in the reports."""

    ranked = ranked_genomes(study, recipe)
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
                "the health check during the search")
            found = seed_findings.get(str(trial.number), {"verdict": verdicts[str(trial.number)]})
            passed_over.append(HealthRejected(trial=trial.number, search_fitness=trial.value,
                                              **found))
    ranked = [(trial, genome) for trial, genome in ranked if trial.number not in rejected]
    out = Path(recipe.out)
    health = {}
    tries = ranked[:MAX_HEALTH_TRIES] + known_healthy(ranked, verdicts, recipe)
    for trial, genome in tries:
        say(f"merging the best genome (trial {trial.number}, fitness {trial.value:.4f}) "
            "into child/")
        child = merge_models(recipe.father, recipe.mother, out / file_names.CHILD_DIR,
                             base=recipe.base, genome=genome, scan=scan_path,
                             settings=settings, device=recipe.device, overwrite=True,
                             progress=False)
        say("health check of the child against both parents"
            + (" and the base" if recipe.base is not None else ""))
        health = child_health(recipe, child, out=out / file_names.HEALTH_DIR, overwrite=True)
        if health_accepted(health["verdict"], recipe.allow_warning):
            above = [r for r in passed_over if r.search_fitness > trial.value]
            return trial, genome, child, health, above
        passed_over.append(HealthRejected(trial=trial.number, search_fitness=trial.value,
                                          **health_findings(health)))
        say(f"[red]child of trial {trial.number} is {health['verdict']}[/red]: "
            f"{'; '.join(health['reasons'])}; trying the next best genome")
    raise SearchError(f"no healthy child among the {len(tries)} genomes tried (see "
                      f"{out / file_names.HEALTH_DIR / file_names.HEALTH}; --allow-warning "
                      "keeps a child whose only finding is interference)")


def known_healthy(ranked: list, verdicts: dict[str, str], recipe: Recipe) -> list:
    """After the MAX_HEALTH_TRIES best: the best genome whose child Phase 2 already found
    healthy before CMA-ES started (`seed_health`), as a last try, so a search whose best
    candidates all lose function still ends with the healthy child it knows of (the ones
    passed over are listed in the reports)."""
    later = [(trial, genome) for trial, genome in ranked[MAX_HEALTH_TRIES:]
             if health_accepted(verdicts.get(str(trial.number)), recipe.allow_warning)]
    return later[:1]


def finish(recipe: Recipe, study: optuna.Study, scorer: CandidateScorer,
           settings: MergeSettings, scan_path: Path | None, phase1: dict,
           phase2_seconds: float) -> SummaryRecord:
    """Pick the healthy child, score it and the baselines on the holdout, and write
    summary.json and recipe.yaml; returns the summary."""
    out = Path(recipe.out)
    trial, genome, child, health, passed_over = pick_healthy(recipe, study, settings,
                                                             scan_path)
    (out / file_names.BEST_GENOME).write_text(genome.to_yaml())
    child_state = scorer.child_state(genome)
    baselines = run_baselines(recipe, scorer, study)
    holdout, results = holdout_table(recipe, scorer, child_state, {
        name: partial(scorer.state_of, c) for name, c in baselines.candidates.items()},
        same_merge=baselines.same_merge)
    search_split = search_split_fitness(recipe, study, trial, scorer, baselines)
    rho, pairs = proxy_spearman(study)
    rho_full, pairs_full = proxy_spearman(study, fully_scored_only=True)
    parents_holdout = {p: results[p] for p in scorer.references()}
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
                              rejected_by_health(study, recipe.allow_warning)).model_copy(
            update={"front": front_of(study, recipe), "prefer": recipe.prefer}),
        holdout=holdout,
        search_split=search_split,
        holdout_limit=recipe.holdout_limit,
        fitness_holdout_limit=recipe.fitness_holdout_limit,
        guard=guard_verdicts(results["child"], recipe.guard, parents_holdout),
        health=HealthVerdict(verdict=health["verdict"], reasons=health["reasons"],
                             flagged_layers=health["flagged_layers"]),
        rejected_by_health=passed_over,
        scan=str(scan_path.relative_to(out)) if scan_path and scan_path.is_relative_to(out)
        else (str(scan_path) if scan_path else None),
        child=file_names.CHILD_DIR,
        versions=versions(),
    )
    dump_json(out / file_names.SUMMARY, record_json(summary))
    (out / file_names.RECIPE).write_text(yaml.safe_dump(
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


def write_records(recipe: Recipe, study: optuna.Study, phase1: dict,
                  rejected: frozenset[int] = frozenset(), chosen: int | None = None) -> None:
    """trials.json and evolution.png; `rejected`: the candidates the health gate rejected
    (the finish knows them all; before it, the seeds' checks); `chosen`: the child's trial."""
    from ..plots.evolution import plot_evolution

    out = Path(recipe.out)
    rows = trial_table(study)
    dump_json(out / file_names.TRIALS, record_json(Trials.model_validate(rows)))
    rejected = rejected | rejected_by_health(study, recipe.allow_warning)
    plot_evolution(rows, phase1["best_curve"], out / file_names.EVOLUTION_PICTURE,
                   rejected=frozenset(rejected), chosen=chosen)


def versions() -> dict:
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "optuna": optuna.__version__,
            "darwin": __version__}
