"""`darwin evolve`: scan, Phase 1 proxy, Phase 2 real search, then the final child.

RUN_DIR is a workspace that a re-run continues: the study (every scored candidate),
the scan and the Phase 1 result are kept there; final artefacts (the child, the
summary) are written atomically at the end.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import Progress
from scipy.stats import spearmanr

from .. import __version__
from ..errors import UsageError
from ..eval.tasks import resolve_tasks
from ..genome import GENES, Genome, genome_hash
from ..merge.engine import ParentTensors
from ..merge.plan import MergeSettings, load_scan_ratios
from ..progress import progress_bar
from . import proxy, proxy_attribution, racing
from .identity import differences, phase1_identity
from .recipe import Recipe
from .scoring import CandidateScorer, guard_verdicts, guarded, primary_score
from .study import (
    dump_json,
    find_duplicate,
    scored_trials,
)

FIELDS = list(GENES)
# Which probe sets a task exercises (the proxy's layer importance); others: all equally.
TASK_PROBES = {
    "simple_arithmetic": {"MATH": 1.0},
    "two_digit_arithmetic": {"MATH": 1.0},
    "gsm8k": {"MATH": 0.5, "REASONING": 0.5},
    "arc_easy": {"KNOWLEDGE": 0.5, "REASONING": 0.5},
    "arc_challenge": {"KNOWLEDGE": 0.5, "REASONING": 0.5},
    "openbook_qa": {"KNOWLEDGE": 0.5, "REASONING": 0.5},
    "piqa": {"REASONING": 0.5, "KNOWLEDGE": 0.5},
    "commonsense_qa": {"KNOWLEDGE": 0.5, "REASONING": 0.5},
    "copa": {"REASONING": 0.5, "LANGUAGE": 0.5},
    "lambada_openai": {"LANGUAGE": 1.0},
}
BASELINES = {
    "dare_ties_0.5": Genome.uniform(0.5, density=Genome().density_a, merge_method_weight=1.0),
    "linear_0.5": Genome.uniform(0.5, density=1.0, merge_method_weight=0.0),
}

console = Console(stderr=True)


def say(message: str) -> None:
    console.print(f"[bold cyan]evolve[/bold cyan] {message}", highlight=False)


def check_recipe(recipe: Recipe) -> None:
    """Fail fast on what can be known before any work starts."""
    resolve_tasks([*recipe.fitness, *recipe.guard, *recipe.extra_tasks])  # unknown -> error
    for role in ("father", "mother"):
        path = getattr(recipe, role)
        if not Path(path).is_dir():
            raise UsageError(f"--{role} {path}: no such model folder")
    if recipe.scan is not None:
        check_scan_file(Path(recipe.scan))


def check_scan_file(path: Path) -> None:
    """A `--scan` must be a scan.json with MRI ratios and the per-layer table."""
    if not path.is_file():
        raise UsageError(f"--scan {path}: no such file (give the scan.json that "
                         "`darwin scan` wrote, or leave --scan out to scan first)")
    load_scan_ratios(path)  # unreadable, not JSON, ratios missing or out of range
    layers = _read_json(path).get("layers")
    if not (isinstance(layers, dict) and all(isinstance(layers.get(p), list) and layers[p]
                                             for p in ("father", "mother"))):
        raise UsageError(f"--scan {path}: not a scan file (no per-layer table for both "
                         "parents)")


def ensure_scan(recipe: Recipe) -> Path:
    """The recipe's scan, or RUN_DIR/scan: reused when it was made from the same parents,
    probe items and settings (scan.json's inputs hash), recomputed when any changed."""
    if recipe.scan is not None:
        return Path(recipe.scan)
    from ..scan import run_scan

    scan_dir = Path(recipe.out) / "scan"
    say(f"scan of both parents into {scan_dir} (formula {recipe.mri}; reused when unchanged)")
    run_scan(recipe.father, recipe.mother, scan_dir, device=recipe.device, dtype=recipe.dtype,
             max_tokens=recipe.probe_max_tokens, max_prompts=recipe.probe_max_prompts,
             formula=recipe.mri, fitness=recipe.weights, base=recipe.base,
             attribution_items=recipe.scan_items, reuse=True, overwrite=True)
    return scan_dir / "scan.json"


def _read_json(path: Path) -> dict | None:
    """A file this run wrote earlier, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _scan_layers(scan: dict) -> tuple[dict, int]:
    """{parent: [{probe: distance}, ...]} from the scan's per-layer table."""
    layers = scan["layers"]
    table = {}
    for parent in ("father", "mother"):
        rows = layers[parent]
        table[parent] = [row["distances"] if "distances" in row else row for row in rows]
    return table, len(table["father"])


def parent_scores(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study) -> dict:
    """Both parents on the search split (once; kept in the study for re-runs and workers),
    on the fitness and guard tasks."""
    cached = study.user_attrs.get("parent_search_scores")
    if cached and all(t in cached["father"] for t in scorer.tasks):
        return cached
    say("scoring both parents on the search split (the proxy needs to know who is better)")
    scores = {p: scores_summary(scorer.score_parent(p)) for p in ("father", "mother")}
    study.set_user_attr("parent_search_scores", scores)
    return scores


def build_proxy_data(weights: dict[str, float], parents: ParentTensors, scan: dict,
                     mri: dict[str, float] | None, settings: MergeSettings,
                     scores: dict) -> proxy.ProxyData:
    """What Phase 1 needs: the attribution model when the scan has one for every fitness
    task, and the distance proxy's stakes (its fallback) always."""
    table, num_layers = _scan_layers(scan)
    delta_sq = {}
    for name, a in parents.father.items():
        if a.is_floating_point():
            delta_sq[name] = float(((parents.mother[name].float() - a.float()) ** 2).sum())
    stakes = []
    for task, weight in weights.items():
        fa, mo = (primary_score(scores[parent][task]) for parent in ("father", "mother"))
        donor = "mother" if mo > fa else "father"
        probes = TASK_PROBES.get(task, {p: 1.0 for p in table["father"][0]})
        imp = proxy.layer_importance(table, donor, probes, num_layers)
        stakes.append(proxy.TaskStake(task, weight, donor, abs(mo - fa), imp))
    attribution = scan.get("attribution")
    model = index = None
    if attribution is not None and all(t in attribution["tasks"] for t in weights):
        metrics = {p: {t: primary_score(scores[p][t]) for t in weights}
                   for p in ("father", "mother")}
        model = proxy_attribution.build_model(attribution, weights, metrics)
        index = proxy_attribution.group_index(parents.infos, model, delta_sq)
    return proxy.ProxyData(parents.infos, parents.shapes(), mri, delta_sq, num_layers, stakes,
                           settings, model, index)


def run_phase1_cached(recipe: Recipe, data: proxy.ProxyData) -> dict:
    path = Path(recipe.out) / "phase1.json"
    identity = phase1_identity(recipe)
    kept = _read_json(path)
    if kept is not None:
        changed = differences(kept.get("identity"), identity)
        if kept.get("proxy_model") != data.model:
            changed.append("proxy model")
        if not changed:
            return kept
        say(f"phase1.json was made for another search (different {', '.join(changed)}): "
            "running Phase 1 again")
    say(f"Phase 1: {recipe.phase1_steps} CMA-ES generations on the proxy ({data.model})")
    started = time.perf_counter()
    best_curve: list[float] = []
    seen, top = proxy.run_phase1(data, steps=recipe.phase1_steps, top_k=recipe.top_k,
                                 seed=recipe.seed, progress=best_curve.append)
    result = {
        "identity": identity, "proxy_model": data.model,
        "steps": recipe.phase1_steps, "seed": recipe.seed, "evaluated": len(seen),
        "seconds": time.perf_counter() - started, "best_curve": best_curve,
        "stakes": [{"task": s.name, "weight": s.weight, "donor": s.donor, "gap": s.gap}
                   for s in data.stakes],
        "top_k": [{"genome": c.genome.model_dump(), "proxy_fitness": c.fitness, "hash": c.hash}
                  for c in top],
    }
    dump_json(path, result)
    say(f"Phase 1 done in {result['seconds']:.1f}s ({len(seen)} proxy evaluations); "
        f"best proxy fitness {top[0].fitness:.4f}")
    return result


# Seeds that do not depend on the proxy, so that a proxy that mis-ranks the parents'
# trade-off cannot hide it (the first real SmolLM2 run's proxy collapsed onto the father;
# docs/EVOLVE.md). Under genome rule v2 each is exactly what its name says:
# * line_R: every tensor at ratio R, on the line from father to mother (half DARE-TIES,
#   half linear, at the default density; 0.85 and above would transplant the mother whole);
# * mother_but_C_from_father: every tensor the mother's (transplanted) except component C,
#   the father's; father_but_C_from_mother the other way round. A fine-tune's skill and its
#   cost often sit in different components (the demo's mother keeps its arithmetic in the
#   blocks and part of its cost in the embeddings: mother_but_embed_from_father).
ANCHOR_RATIOS = (0.3, 0.5, 0.65, 0.8)
COMPONENT_FIELDS = ("attn_ratio", "ffn_ratio", "embed_ratio")


def anchor_genomes() -> dict[str, Genome]:
    """The anchors by name, in the order they are queued (the swaps give way first)."""
    anchors = {f"line_{r}": Genome.uniform(r, density=Genome().density_b,
                                           merge_method_weight=0.5) for r in ANCHOR_RATIOS}
    for side, (whole, swapped) in ((1.0, ("mother", "father")), (0.0, ("father", "mother"))):
        for field in COMPONENT_FIELDS:
            name = f"{whole}_but_{field.removesuffix('_ratio')}_from_{swapped}"
            anchors[name] = Genome.uniform(side, merge_method_weight=0.0).model_copy(
                update={field: 1 - side})
    return anchors


def enqueue_seeds(study: optuna.Study, phase1: dict, stale: list[dict],
                  recipe_trials: int) -> None:
    """Queue the Phase 2 seeds once: the proxy's top-k and the anchors (and, on every
    start, any candidate that a kill cut off). The anchors that the budget cannot hold
    beside the top-k are left out, the component swaps first."""
    for params in stale:
        study.enqueue_trial(params, user_attrs={"source": "requeued_after_kill"})
    if study.user_attrs.get("phase1_enqueued"):
        return
    for cand in phase1["top_k"]:
        study.enqueue_trial(genome_params(Genome(**cand["genome"])),
                            user_attrs={"source": "proxy_top_k",
                                        "proxy_fitness": cand["proxy_fitness"]})
    room = max(0, recipe_trials - len(phase1["top_k"]))
    for name, genome in list(anchor_genomes().items())[:room]:
        study.enqueue_trial(genome_params(genome), user_attrs={"source": "anchor",
                                                               "anchor": name})
    study.set_user_attr("phase1_enqueued", True)


def genome_params(genome: Genome) -> dict[str, float]:
    """A genome's 14 values by name: a trial's parameters (the rule is the search's)."""
    return dict(zip(GENES, genome.values(), strict=True))


def best_scored_genome(study: optuna.Study) -> dict | None:
    """The best fully scored Phase 2 candidate so far (CMA-ES starts there once the seeds
    are scored)."""
    trials = fully_scored(scored_trials(study, phase=2))
    if not trials:
        return None
    return {k: float(v) for k, v in max(trials, key=lambda t: t.value).params.items()}


def incumbent(study: optuna.Study) -> dict | None:
    """The best fully scored Phase 2 candidate with its per-item scores (racing's rival)."""
    full = [t for t in scored_trials(study, phase=2) if "item_scores" in t.user_attrs]
    if not full:
        return None
    best = max(full, key=lambda t: (t.value, -t.number))
    return {"number": best.number, "value": best.value,
            "item_scores": best.user_attrs["item_scores"]}


def score_candidate(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study,
                    trial: optuna.Trial, genome: Genome) -> tuple[float, dict, dict]:
    """Score one candidate, raced against the incumbent when the recipe races; a fully
    scored one keeps its per-item scores (the next races' rival)."""
    if recipe.racing:
        value, scores, timings, record = racing.race(scorer, genome, incumbent(study))
        trial.set_user_attr("race", record)
        if record["outcome"] == "stopped":
            return value, scores, timings
    else:
        value, scores, timings = scorer.score(genome)
    trial.set_user_attr("item_scores", {t: scores[t]["item_scores"] for t in scorer.weights})
    if recipe.guard:
        verdicts = guard_verdicts(scores, recipe.guard, study.user_attrs["parent_search_scores"])
        trial.set_user_attr("guard", verdicts)
        value = guarded(value, verdicts)
    return value, scores, timings


def make_objective(recipe: Recipe, scorer: CandidateScorer, settings: MergeSettings,
                   study: optuna.Study, data: proxy.ProxyData, on_scored):
    def objective(trial: optuna.Trial) -> float:
        genome = Genome(**{k: trial.suggest_float(k, 0.0, 1.0) for k in FIELDS})
        key = genome_hash(genome, settings)
        trial.set_user_attr("genome_hash", key)
        trial.set_user_attr("phase", 2)
        trial.set_user_attr("worker", worker_name())
        trial.set_user_attr("worker_seed_offset", worker_seed_offset())
        if "source" not in trial.user_attrs:
            trial.set_user_attr("source", "cma_es")
        if "proxy_fitness" not in trial.user_attrs:
            trial.set_user_attr("proxy_fitness", proxy.proxy_fitness(genome, data))
        earlier = find_duplicate(study, trial, key)
        if earlier is not None:
            return earlier
        value, scores, timings = score_candidate(recipe, scorer, study, trial, genome)
        trial.set_user_attr("scores", scores_summary(scores))
        trial.set_user_attr("seconds", timings)
        on_scored(value, was_stopped(trial))
        return value

    return objective


def scores_summary(scores: dict) -> dict:
    """What trials.json keeps of a candidate's scores: each task's primary metric (named
    in `metric`), its standard error, the tie-breaker and n (not the per-item lists)."""
    summary = {}
    for task, result in scores.items():
        keep = {"metric", "higher_is_better", "n", "mean_gold_logprob", result["metric"],
                f"{result['metric']}_stderr"}
        summary[task] = {k: v for k, v in result.items() if k in keep}
    return summary


def run_phase2(recipe: Recipe, open_with, scorer: CandidateScorer, settings: MergeSettings,
               data: proxy.ProxyData, phase1: dict) -> float:
    """Score the queued seeds, then let CMA-ES go on from the best of them.

    `open_with(sampler)` opens the study with a sampler: a plain one while the seeds (whose
    values are fixed) are scored, then CMA-ES centred on the best candidate scored so far
    (the proxy's best only if nothing is scored yet).
    """
    started = time.perf_counter()
    study = open_with(optuna.samplers.RandomSampler(seed=recipe.seed))
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    with progress_bar(True) as bar:
        count = phase2_counter(bar, recipe.trials, study)
        if waiting:
            _optimize(recipe, study, scorer, settings, data, count, limit=waiting)
        study = open_with(make_sampler(recipe, best_scored_genome(study)
                                       or phase1["top_k"][0]["genome"]))
        _optimize(recipe, study, scorer, settings, data, count)
    return time.perf_counter() - started


def phase2_counter(bar: Progress, trials: int, study: optuna.Study):
    """Phase 2's overall bar (scored candidates of the budget, elapsed time, time left) on
    `bar`; returns the Optuna callback that moves it after each trial."""
    task = bar.add_task("Phase 2 candidates", total=trials,
                        completed=len(scored_trials(study, phase=2)))

    def count(study: optuna.Study, _trial) -> None:
        bar.update(task, completed=len(scored_trials(study, phase=2)))

    return count


def _optimize(recipe: Recipe, study: optuna.Study, scorer: CandidateScorer,
              settings: MergeSettings, data: proxy.ProxyData, count,
              limit: int | None = None) -> None:
    done = len(scored_trials(study, phase=2))
    remaining = recipe.trials - done
    if remaining <= 0:
        say(f"Phase 2 has its {done} scored candidates (budget {recipe.trials})")
        return
    remaining = remaining if limit is None else min(limit, remaining)
    what = "queued seeds (proxy top-k, anchors)" if limit is not None else "CMA-ES candidates"
    say(f"Phase 2: {remaining} {what} merged in memory and scored on the search split"
        + (f" ({done} already scored)" if done else ""))
    best = [max((t.value for t in fully_scored(scored_trials(study, 2))), default=float("-inf"))]

    def on_scored(value: float, stopped: bool) -> None:
        n = len(scored_trials(study, phase=2)) + 1
        if stopped:
            say(f"candidate {n}/{recipe.trials}: stopped early by racing (estimate "
                f"{value:.4f}, best {best[0]:.4f})")
            return
        best[0] = max(best[0], value)
        say(f"candidate {n}/{recipe.trials}: fitness {value:.4f} (best {best[0]:.4f})")

    callbacks = [optuna.study.MaxTrialsCallback(recipe.trials, states=(TrialState.COMPLETE,)),
                 count]
    study.optimize(make_objective(recipe, scorer, settings, study, data, on_scored),
                   n_trials=remaining, timeout=recipe.timeout, callbacks=callbacks,
                   gc_after_trial=True)


def fully_scored(trials: list) -> list:
    """The trials scored on every search item (not stopped early by racing)."""
    return [t for t in trials if not was_stopped(t)]


def was_stopped(trial) -> bool:
    return "race" in trial.user_attrs and trial.user_attrs["race"]["outcome"] == "stopped"


def make_sampler(recipe: Recipe, start: dict) -> optuna.samplers.BaseSampler:
    """Optuna's CMA-ES centred on `start` (a genome's values by field)."""
    best = start
    seed = recipe.seed if recipe.storage is None else recipe.seed + worker_seed_offset()
    with warnings.catch_warnings():
        # x0/sigma0 are deprecated in Optuna 4.9+ but still honoured; starting CMA-ES at
        # the proxy's best is the point of Phase 1 (docs/EVOLVE.md)
        warnings.simplefilter("ignore", FutureWarning)
        return optuna.samplers.CmaEsSampler(x0=best, sigma0=recipe.sigma0, seed=seed,
                                            popsize=recipe.popsize,
                                            warn_independent_sampling=False)


def _pid() -> int:
    import os

    return os.getpid()


def worker_name() -> str:
    return f"{platform.node()}:{_pid()}"


def worker_seed_offset() -> int:
    """A worker's offset to the search seed, so that workers sharing a study draw
    different genomes: from sha256 of host and PID, the same in every process (Python's
    `hash` of a string changes per process) and recorded on each trial."""
    digest = hashlib.sha256(worker_name().encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def proxy_spearman(study: optuna.Study) -> tuple[float | None, int]:
    pairs = [(t.user_attrs.get("proxy_fitness"), t.value) for t in scored_trials(study, 2)
             if t.user_attrs.get("proxy_fitness") is not None and
             t.user_attrs.get("duplicate_of") is None]
    if len(pairs) < 3:
        return None, len(pairs)
    rho = spearmanr([p for p, _ in pairs], [v for _, v in pairs]).statistic
    return (None if not np.isfinite(rho) else float(rho)), len(pairs)


def versions() -> dict:
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "optuna": optuna.__version__,
            "darwin": __version__}
