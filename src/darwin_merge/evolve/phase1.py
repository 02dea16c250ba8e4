"""Phase 1: the proxy's data, measured once, and CMA-ES on the proxy (docs/EVOLVE.md).

The proxy models themselves (pure fitness functions of a genome) are `proxy.py` and
`proxy_attribution.py`; this module builds what they need from the scan and the parents'
real scores, runs the CMA loop on them and keeps its result in RUN_DIR/phase1.json,
reused by a re-run whose identity matches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cmaes
import numpy as np
import optuna

from ..errors import RecordError
from ..eval.results import TaskScore
from ..genome import GENES, Genome, genome_hash
from ..io.files import dump_json
from ..merge.engine import ParentTensors
from ..merge.plan import MergeSettings
from ..records import (
    Phase1Record,
    ScanRecord,
    Stake,
    TopGenome,
    file_names,
    read_optional,
    record_json,
)
from . import proxy, proxy_attribution, say
from .recipe import Recipe
from .scoring import (
    GUARD_ITEMS_ATTR,
    CandidateScorer,
    guard_items_of,
    parent_search_scores,
    scores_summary,
)
from .study import differences, search_identity

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
# Phase 1's CMA-ES: the `cmaes` library, the one Optuna's CmaEsSampler runs in Phase 2.
OPTIMIZER = f"cmaes {cmaes.__version__}"


def _kept(path: Path) -> Phase1Record | None:
    """phase1.json from an earlier run; None when it is missing or does not parse (a
    damaged file, or one of another schema: Phase 1 runs again)."""
    try:
        return read_optional(Phase1Record, path)
    except RecordError:
        return None


def parent_scores(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study
                  ) -> dict[str, dict[str, TaskScore]]:
    """Both parents (and the base, when given) on the search split, on the fitness and guard
    tasks; once: kept in the study for re-runs and workers."""
    cached = study.user_attrs.get("parent_search_scores")
    models = scorer.references()
    guards = list(recipe.guard)
    items = study.user_attrs.get(GUARD_ITEMS_ATTR, {})
    if cached and set(cached) == set(models) and all(t in cached["father"] for t in scorer.tasks) \
            and (recipe.guard_rule == "floor" or all(t in items.get(m, {}) for m in models
                                                     for t in guards)):
        return parent_search_scores(study)
    say(f"scoring the {' and '.join(models)} on the search split (the proxy needs to know "
        "who is better, the guards their floor)")
    scores = {p: scorer.score_parent(p) for p in models}
    study.set_user_attr("parent_search_scores", {p: scores_summary(s) for p, s in scores.items()})
    study.set_user_attr(GUARD_ITEMS_ATTR, guard_items_of(scores, guards))
    return parent_search_scores(study)


def build_proxy_data(weights: dict[str, float], parents: ParentTensors, scan: ScanRecord,
                     mri: dict[str, float] | None, settings: MergeSettings,
                     scores: dict[str, dict[str, TaskScore]]) -> proxy.ProxyData:
    """What Phase 1 needs: the attribution model when the scan has one for every fitness
    task, and the distance proxy's stakes (its fallback) always."""
    table = scan.layer_distances()
    num_layers = len(table["father"])
    delta_sq = {}
    for name, a in parents.father.items():
        if a.is_floating_point():
            delta_sq[name] = float(((parents.mother[name].float() - a.float()) ** 2).sum())
    stakes = []
    for task, weight in weights.items():
        fa, mo = (scores[parent][task].signed_primary for parent in ("father", "mother"))
        donor = "mother" if mo > fa else "father"
        probes = TASK_PROBES.get(task, {p: 1.0 for p in table["father"][0]})
        imp = proxy.layer_importance(table, donor, probes, num_layers)
        stakes.append(proxy.TaskStake(task, weight, donor, abs(mo - fa), imp))
    attribution = scan.attribution
    model = index = None
    if attribution is not None and all(t in attribution["tasks"] for t in weights):
        metrics = {p: {t: scores[p][t].signed_primary for t in weights}
                   for p in ("father", "mother")}
        model = proxy_attribution.build_model(attribution, weights, metrics)
        index = proxy_attribution.group_index(parents.infos, model, delta_sq)
    return proxy.ProxyData(parents.infos, parents.shapes(), mri, delta_sq, num_layers, stakes,
                           settings, model, index)


def phase1_identity(recipe: Recipe) -> dict:
    """What phase1.json depends on: the search's identity, Phase 1's own settings and the
    optimizer (another CMA-ES library or version draws other genomes from the same seed)."""
    return {**search_identity(recipe), "phase1_steps": recipe.phase1_steps,
            "top_k": recipe.top_k, "seed": recipe.seed, "optimizer": OPTIMIZER}


def run_phase1_cached(recipe: Recipe, data: proxy.ProxyData) -> dict:
    path = Path(recipe.out) / file_names.PHASE1
    identity = phase1_identity(recipe)
    kept = _kept(path)
    if kept is not None:
        changed = differences(kept.identity, identity)
        if kept.proxy_model != data.model:
            changed.append("proxy model")
        if not changed:
            return record_json(kept)
        say(f"phase1.json was made for another search (different {', '.join(changed)}): "
            "running Phase 1 again")
    say(f"Phase 1: {recipe.phase1_steps} CMA-ES generations on the proxy ({data.model})")
    started = time.perf_counter()
    best_curve: list[float] = []
    seen, top = run_phase1(data, steps=recipe.phase1_steps, top_k=recipe.top_k,
                           seed=recipe.seed, progress=best_curve.append)
    result = Phase1Record(
        identity=identity, proxy_model=data.model,
        steps=recipe.phase1_steps, seed=recipe.seed, evaluated=len(seen),
        seconds=time.perf_counter() - started, best_curve=best_curve,
        stakes=[Stake(task=s.name, weight=s.weight, donor=s.donor, gap=s.gap)
                for s in data.stakes],
        top_k=[TopGenome(genome=c.genome.model_dump(), proxy_fitness=c.fitness, hash=c.hash)
               for c in top],
    )
    dump_json(path, record_json(result))
    say(f"Phase 1 done in {result.seconds:.1f}s ({len(seen)} proxy evaluations); "
        f"best proxy fitness {top[0].fitness:.4f}")
    return record_json(result)


@dataclass(frozen=True)
class ProxyCandidate:
    genome: Genome
    fitness: float
    hash: str


def run_phase1(data: proxy.ProxyData, steps: int = 200, top_k: int = 8, seed: int = 0,
               sigma0: float = 0.2, min_spread: float = 0.2,
               progress=None) -> tuple[list[ProxyCandidate], list[ProxyCandidate]]:
    """CMA-ES (`cmaes.CMA`, bounded to [0, 1], seeded) for `steps` generations on the
    proxy; returns (all evaluated, diverse top-k).

    The top-k are the best genomes that differ from each better one by at least
    `min_spread` in some value, so Phase 2 starts from several distinct recipes.
    """
    size = len(GENES)
    es = cmaes.CMA(mean=np.full(size, 0.5), sigma=sigma0, bounds=np.array([[0.0, 1.0]] * size),
                   seed=seed)
    seen: list[ProxyCandidate] = []
    for _ in range(steps):
        xs = [es.ask() for _ in range(es.population_size)]  # each within the bounds
        genomes = [Genome.from_values(x) for x in xs]
        fits = [proxy.proxy_fitness(g, data) for g in genomes]
        es.tell([(x, -f) for x, f in zip(xs, fits, strict=True)])  # cmaes minimises
        seen.extend(ProxyCandidate(g, f, genome_hash(g, data.settings))
                    for g, f in zip(genomes, fits, strict=True))
        if progress is not None:
            progress(max(c.fitness for c in seen))
    return seen, diverse_top(seen, top_k, min_spread)


def diverse_top(candidates: list[ProxyCandidate], k: int, min_spread: float
                ) -> list[ProxyCandidate]:
    chosen: list[ProxyCandidate] = []
    for cand in sorted(candidates, key=lambda c: -c.fitness):
        values = np.array(cand.genome.values())
        if all(np.abs(values - np.array(c.genome.values())).max() >= min_spread for c in chosen):
            chosen.append(cand)
        if len(chosen) == k:
            break
    return chosen
