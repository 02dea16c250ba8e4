"""Phase 2: the real search. The seeds (the proxy's top-k and the anchors) are scored
first, then Optuna's CMA-ES goes on from the best of them; each candidate is merged in
memory and scored on the search split, raced against the best so far (docs/EVOLVE.md).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import optuna
from optuna.trial import TrialState
from rich.progress import Progress

from ..genome import GENE_BOUNDS, NUM_BLOCKS, Genome, genes_of, genome_hash
from ..merge.plan import MergeSettings
from ..progress import progress_bar
from . import proxy, racing, say
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
    guard_verdicts,
    guarded,
    parent_search_scores,
    reference_guard_items,
    scores_summary,
)
from .study import (
    CMA_ES_SIGMA,
    CMA_ES_START,
    SEED_SOURCES,
    find_duplicate,
    ranked_trials,
    scored_trials,
    trial_genome,
    was_stopped,
    worker_name,
    worker_seed_offset,
)

# Seeds that do not depend on the proxy, so that a proxy that mis-ranks the parents'
# trade-off cannot hide it (the first real SmolLM2 run's proxy collapsed onto the father;
# docs/EVOLVE.md). Under genome rule v2 each is exactly what its name says:
# * line_R: every tensor at ratio R, on the line from father to mother (half DARE-TIES,
#   half linear, at the default density; 0.85 and above would transplant the mother whole);
# * father_below_mother_above: the father's lower half of the blocks and the mother's upper
#   half, whole (transplanted), and mother_below_father_above the other way round; the
#   tensors outside the blocks at 0.5. The slice merge people make by hand: a skill
#   fine-tuned into some blocks only survives a change of the others only as a whole, which
#   a sum of per-group effects (the proxy) cannot see (the specialists pair, docs/DEMO.md);
# * mother_but_C_from_father: every tensor the mother's (transplanted) except component C,
#   the father's; father_but_C_from_mother the other way round. A fine-tune's skill and its
#   cost often sit in different components (the demo's mother keeps its arithmetic in the
#   blocks and part of its cost in the embeddings: mother_but_embed_from_father).
ANCHOR_RATIOS = (0.3, 0.5, 0.65, 0.8)
# CMA-ES's step in [0, 1] coordinates: v2's fixed one, and the range of v3's, taken from the
# seeds' spread (docs/EVOLVE.md, "CMA-ES's step"). At 0.05 on the demo pair the candidates
# scored close to the seed; at 0.15 they sat 0.4-1.1 from it (docs/RESULTS.md). The
# benchmark's seeds lie 0.21-0.25 apart; a step that large put most candidates far below the
# start, one of 0.08 near it, and gained on fresh items on the disjoint problem (+0.038
# [+0.006, +0.068]; overlap -0.003 [-0.043, +0.035]): the spread, at most 0.08.
SIGMA0_V2, SIGMA_RANGE = 0.15, (0.03, 0.08)
# Under v3 the anchors give way to this many CMA-ES generations (x popsize candidates): in
# the benchmark's quick mode (24 candidates, 6 tuned baselines, 4 top-k) the anchors took
# all but 2 candidates and CMA-ES never completed a generation (docs/RESULTS.md). v2's
# queue is unchanged (its runs and tests stay as they were).
CMA_ES_RESERVED_GENERATIONS = 2
COMPONENT_FIELDS = ("attn_ratio", "ffn_ratio", "embed_ratio")


def anchor_genomes() -> dict[str, Genome]:
    """The anchors by name, in the order they are queued (the swaps give way first)."""
    anchors = {f"line_{r}": Genome.uniform(r, density=Genome().density_b,
                                           merge_method_weight=0.5) for r in ANCHOR_RATIOS}
    half = NUM_BLOCKS // 2
    for below, above in (("father", "mother"), ("mother", "father")):
        blocks = {f"block_{i}_ratio": float((below if i < half else above) == "mother")
                  for i in range(NUM_BLOCKS)}
        anchors[f"{below}_below_{above}_above"] = Genome.uniform(
            0.5, merge_method_weight=0.0).model_copy(update=blocks)
    for side, (whole, swapped) in ((1.0, ("mother", "father")), (0.0, ("father", "mother"))):
        for field in COMPONENT_FIELDS:
            name = f"{whole}_but_{field.removesuffix('_ratio')}_from_{swapped}"
            anchors[name] = Genome.uniform(side, merge_method_weight=0.0).model_copy(
                update={field: 1 - side})
    return anchors


def enqueue_seeds(study: optuna.Study, phase1: dict, stale: list[dict], recipe: Recipe,
                  baseline_seeds: dict[str, Genome] | None = None) -> None:
    """Queue the Phase 2 seeds once: under genome rule v3 the tuned baselines' chosen
    points first (`baseline_seeds`: the search starts no lower than the recipes a user
    would pick), the proxy's top-k and the anchors (read under v3: `Genome.as_v3`); and, on
    every start, any candidate that a kill cut off. The anchors that the budget cannot hold
    beside the others (under v3, whose tuned seeds lengthen the queue, also beside CMA-ES's
    first CMA_ES_RESERVED_GENERATIONS generations) are left out, the component swaps first."""
    for params in stale:
        study.enqueue_trial(params, user_attrs={"source": "requeued_after_kill"})
    if study.user_attrs.get("phase1_enqueued"):
        return

    def searched(genome: Genome) -> Genome:  # Phase 1 and the anchors search rule v2
        return genome.as_v3() if recipe.genome_rule == "v3" else genome

    queued = 0
    for name, genome in (baseline_seeds or {}).items():
        study.enqueue_trial(genome_params(genome), user_attrs={"source": "tuned_baseline",
                                                               "anchor": name})
        queued += 1
    for cand in phase1["top_k"]:
        study.enqueue_trial(genome_params(searched(Genome(**cand["genome"]))),
                            user_attrs={"source": "proxy_top_k",
                                        "proxy_fitness": cand["proxy_fitness"]})
        queued += 1
    reserved = CMA_ES_RESERVED_GENERATIONS * recipe.popsize if recipe.genome_rule == "v3" else 0
    room = max(0, recipe.trials - queued - reserved)
    for name, genome in list(anchor_genomes().items())[:room]:
        study.enqueue_trial(genome_params(searched(genome)), user_attrs={"source": "anchor",
                                                                         "anchor": name})
    study.set_user_attr("phase1_enqueued", True)


def genome_params(genome: Genome) -> dict[str, float]:
    """A genome's values by name (14; v3: 19): a trial's parameters (the rule is the
    search's, `Recipe.genome_rule`)."""
    return dict(zip(genome.genes, genome.values(), strict=True))


def cma_es_start(recipe: Recipe, study: optuna.Study, scorer: CandidateScorer
                 ) -> dict | None:
    """Where CMA-ES starts: chosen once (`healthy_start`) and kept in the study, so a
    resumed run goes on from the same start without checking any child again (it used to
    check the best CMA-ES candidates as if they were seeds, even with the budget spent)."""
    if CMA_ES_START in study.user_attrs:
        trial = study.get_trials(deepcopy=False)[study.user_attrs[CMA_ES_START]]
        return {k: float(v) for k, v in trial.params.items()}
    return healthy_start(recipe, study, scorer)


def healthy_start(recipe: Recipe, study: optuna.Study, scorer: CandidateScorer) -> dict | None:
    """The best fully scored candidate whose child passes the health check (of the
    MAX_HEALTH_TRIES best; the best one when none does): CMA-ES then explores around a
    child the finish can keep, not around one it will reject (docs/EVOLVE.md). Each
    verdict is kept in the study (`seed_health`), so a resumed run does not check again."""
    ranked = ranked_trials(scored_trials(study, phase=2))
    verdicts = dict(study.user_attrs.get("seed_health", {}))
    for trial in ranked[:MAX_HEALTH_TRIES]:
        key = str(trial.number)
        if key not in verdicts:
            scorer.load(scorer.child_state(trial_genome(trial, recipe.genome_rule)))
            verdicts[key] = checked_in_memory(recipe, scorer, study, trial.number)
            say(f"health check of trial {trial.number} before CMA-ES starts there: "
                f"{verdicts[key]}")
        if health_accepted(verdicts[key], recipe.allow_warning):
            return started_from(study, trial)
    return started_from(study, ranked[0]) if ranked else None


def checked_in_memory(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study,
                      number: int) -> str:
    """Health-check the child the scorer holds (trial `number`'s) and keep the verdict and
    findings in the study (`seed_health`, SEED_FINDINGS): racing's incumbent, CMA-ES's
    start and the finish read them, and a resumed run does not check again."""
    report = child_health(recipe, scorer.model, tokenizer=scorer.tokenizer)
    verdicts = dict(study.user_attrs.get("seed_health", {}))
    findings = dict(study.user_attrs.get(SEED_FINDINGS, {}))
    verdicts[str(number)], findings[str(number)] = report["verdict"], health_findings(report)
    study.set_user_attr(SEED_FINDINGS, findings)
    study.set_user_attr("seed_health", verdicts)
    return report["verdict"]


def started_from(study: optuna.Study, trial) -> dict:
    """The start's genome values; its trial is kept in the study (`cma_es_start`) for the
    summary's best seed."""
    study.set_user_attr(CMA_ES_START, trial.number)
    return {k: float(v) for k, v in trial.params.items()}


def incumbent(study: optuna.Study, rejected: set[int] = frozenset()) -> dict | None:
    """The best fully scored Phase 2 candidate with its per-item scores (racing's rival),
    leaving out those the finish would reject (`rejected`: their child is unhealthy)."""
    full = [t for t in scored_trials(study, phase=2)
            if "item_scores" in t.user_attrs and t.number not in rejected]
    if not full:
        return None
    best = max(full, key=lambda t: (t.value, -t.number))
    return {"number": best.number, "value": best.value,
            "item_scores": best.user_attrs["item_scores"],
            "item_gold_logprobs": best.user_attrs.get("item_gold_logprobs", {})}


def best_kept_fitness(study: optuna.Study, recipe: Recipe) -> float:
    """The progress line's "best so far": the best fully scored candidate the finish may
    keep (a seed whose child failed the health check is left out, as in racing)."""
    kept = incumbent(study, rejected_by_health(study, recipe.allow_warning))
    return kept["value"] if kept is not None else float("-inf")


def score_candidate(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study,
                    trial: optuna.Trial, genome: Genome) -> tuple[float, dict, dict]:
    """Score one candidate, raced against the incumbent when the recipe races; a fully
    scored one keeps its per-item scores (the next races' rival)."""
    if recipe.racing:
        rival = incumbent(study, rejected_by_health(study, recipe.allow_warning))
        value, scores, timings, record = racing.race(scorer, genome, rival)
        trial.set_user_attr("race", record)
        if record["outcome"] == "stopped":
            return value, scores, timings
    else:
        value, scores, timings = scorer.score(genome)
    for name, items in racing.item_record(scores, list(scorer.weights)).items():
        trial.set_user_attr(name, items)  # item_scores, item_gold_logprobs
    if recipe.guard:
        verdicts = guard_verdicts(scores, recipe.guard, parent_search_scores(study),
                                  reference_guard_items(study, recipe.guard_rule))
        trial.set_user_attr("guard", verdicts)
        value = guarded(value, verdicts)
    started = time.perf_counter()
    check_scored(recipe, scorer, study, trial.number, value)
    timings["health_seconds"] = time.perf_counter() - started
    return value, scores, timings


def check_scored(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study,
                 number: int, value: float) -> None:
    """Every fully scored candidate is health-checked at once, the scorer still holding its
    child (a forward pass over the probes; the parents were measured once): its probe
    excess is the search's second objective (the Pareto front, evolve/front.py), and an
    unhealthy one never becomes the rival that stops the next candidates (docs/EVOLVE.md,
    "Racing"). Said when it is the best so far or unhealthy."""
    rival = incumbent(study, rejected_by_health(study, recipe.allow_warning))
    verdict = checked_in_memory(recipe, scorer, study, number)
    kept = health_accepted(verdict, recipe.allow_warning)
    if rival is None or value > rival["value"] or not kept:
        say(f"health check of trial {number}" + (", the best so far" if rival is None or
                                                 value > rival["value"] else "")
            + f": {verdict}" + ("" if kept else " (left out of racing's incumbent and of "
                                "the child's choice)"))


def make_objective(recipe: Recipe, scorer: CandidateScorer, settings: MergeSettings,
                   study: optuna.Study, data: proxy.ProxyData, on_scored):
    def objective(trial: optuna.Trial) -> float:
        genome = Genome(**{k: trial.suggest_float(k, *GENE_BOUNDS[k])
                           for k in genes_of(recipe.genome_rule)},
                        genome_rule=recipe.genome_rule)
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


def run_phase2(recipe: Recipe, study: optuna.Study, scorer: CandidateScorer,
               settings: MergeSettings, data: proxy.ProxyData, phase1: dict) -> float:
    """Score the queued seeds, then let CMA-ES go on from the best of them.

    The seeds (whose values are fixed) are scored with the sampler the study was opened
    with; then the study's sampler becomes CMA-ES centred on the best candidate scored so
    far whose child is healthy (the proxy's best only if nothing is scored yet).
    """
    started = time.perf_counter()
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    with progress_bar(True) as bar:
        count = phase2_counter(bar, recipe.trials, study)
        if waiting:
            _optimize(recipe, study, scorer, settings, data, count, limit=waiting)
        study.sampler = make_sampler(recipe, cma_es_start(recipe, study, scorer)
                                     or phase1["top_k"][0]["genome"], cma_es_sigma(recipe, study))
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
    seeds = ("tuned baselines, " if recipe.genome_rule == "v3" else "") + "proxy top-k, anchors"
    what = f"queued seeds ({seeds})" if limit is not None else "CMA-ES candidates"
    say(f"Phase 2: {remaining} {what} merged in memory and scored on the search split"
        + (f" ({done} already scored)" if done else ""))
    best = [best_kept_fitness(study, recipe)]

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


def make_sampler(recipe: Recipe, start: dict, sigma0: float) -> optuna.samplers.BaseSampler:
    """Optuna's CMA-ES centred on `start` (a genome's values by field), with step `sigma0`
    (in the [0, 1] coordinates Optuna gives every gene); separable under `cma: separable`."""
    seed = recipe.seed if recipe.storage is None else recipe.seed + worker_seed_offset()
    with warnings.catch_warnings():
        # x0/sigma0 are deprecated in Optuna 4.9+ but still honoured; starting CMA-ES at
        # the best healthy seed is the point of the seeds (docs/EVOLVE.md)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # separable
        return optuna.samplers.CmaEsSampler(x0=start, sigma0=sigma0, seed=seed,
                                            popsize=recipe.popsize,
                                            use_separable_cma=recipe.cma == "separable",
                                            warn_independent_sampling=False)


def cma_es_sigma(recipe: Recipe, study: optuna.Study) -> float:
    """CMA-ES's step: the recipe's `sigma0` if given; under genome rule v2 SIGMA0_V2; under
    v3 the spread of the best fully scored seeds (`seed_spread`). Chosen once and kept in
    the study, so a resumed run goes on with the same step (a study whose CMA-ES began
    before the step was kept had 0.15)."""
    if CMA_ES_SIGMA in study.user_attrs:
        return float(study.user_attrs[CMA_ES_SIGMA])
    if recipe.sigma0 is not None:
        sigma = recipe.sigma0
    elif recipe.genome_rule == "v2" or any(t.user_attrs.get("source") == "cma_es"
                                           for t in scored_trials(study, phase=2)):
        # (a study whose CMA-ES began before the step was kept: the step it had)
        sigma = SIGMA0_V2
    else:
        seeds = [t for t in ranked_trials(scored_trials(study, phase=2))
                 if t.user_attrs.get("source") in SEED_SOURCES and not was_stopped(t)
                 ][:recipe.popsize]
        sigma = seed_spread([unit_values(t.params, recipe.genome_rule) for t in seeds])
        say(f"CMA-ES step size {sigma:.3f}: the spread of the {len(seeds)} best fully scored "
            "seeds")
    study.set_user_attr(CMA_ES_SIGMA, sigma)
    return sigma


def unit_values(params: dict[str, float], rule: str) -> list[float]:
    """A trial's genes in [0, 1] (each over its GENE_BOUNDS), the coordinates CMA-ES steps in."""
    return [(params[name] - GENE_BOUNDS[name][0]) / (GENE_BOUNDS[name][1] - GENE_BOUNDS[name][0])
            for name in genes_of(rule)]


def seed_spread(points: list[list[float]]) -> float:
    """The step size from the best seeds (genes in [0, 1]): the root mean square over genes
    of their standard deviation, so that CMA-ES's first samples lie about as far from its
    start as the good seeds lie from each other; clipped to SIGMA_RANGE (under two seeds:
    SIGMA0_V2)."""
    if len(points) < 2:
        return SIGMA0_V2
    spread = float(np.sqrt(np.mean(np.var(np.asarray(points), axis=0, ddof=1))))
    return float(np.clip(spread, *SIGMA_RANGE))
