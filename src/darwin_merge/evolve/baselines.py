"""The baselines a child is measured against: the merges a user would otherwise pick,
fixed and tuned on the search split by the search's own objective (docs/EVOLVE.md,
"Baselines").

* fixed: DARE-TIES 0.5 and linear 0.5 (darwin genomes: each task vector halved) and task
  arithmetic at lambda 1.0 (`base + d_father + d_mother`, mergekit's default);
* tuned: task arithmetic over 8 lambdas, TIES and DARE-TIES over 4 densities x 4 lambdas,
  each point merged in memory and raced on the `search` split against its recipe's best
  point so far (the fitness less the guard penalty, as every Phase 2 candidate). Each
  recipe's best point, and its best *healthy* point: of its MAX_HEALTH_TRIES best by
  fitness, health-checked in that order, the best the check accepts.

The guard tasks (on SmolLM2 about 33 s a point, six times the fitness tasks' cost and
eight times a health check's) are scored only where they can change a choice: for racing's
rival, and best fitness first for each choice until no point left can beat the best found
(a point's guarded value is at most its fitness), on a healthy point only after its health
check. The choices are those of guarding and checking every point (a test).

Every scored point is kept in the study (`baseline_points`), so a killed run continues
without scoring a point twice. Two points that make the same merge, to the bit (with task
vectors that never share a tensor, TIES and DARE-TIES at density 1 are task arithmetic), are
scored once: the later one takes the earlier one's scores. Only search items are read here:
the holdout (and the benchmark's test items) judge the points chosen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import optuna

from ..genome import Genome
from ..mergekit.standard import StandardRecipe
from ..progress import progress_bar
from ..records import BaselinePoint, BaselineSearch, StandardValues
from . import racing, say
from .gate import MAX_HEALTH_TRIES, child_health, health_accepted
from .recipe import Recipe
from .scoring import (
    CandidateScorer,
    guard_verdicts,
    guarded,
    parent_search_scores,
    reference_guard_items,
    scores_summary,
)

# The two darwin-genome merges every run has reported since the first demo.
FIXED_GENOMES = {
    "dare_ties_0.5": Genome.uniform(0.5, density=Genome().density_a, merge_method_weight=1.0),
    "linear_0.5": Genome.uniform(0.5, density=1.0, merge_method_weight=0.0),
}
# mergekit's default task arithmetic: what a user writes first.
FIXED_RECIPES = (StandardRecipe(method="task_arithmetic", scale=1.0),)
TASK_ARITHMETIC_SCALES = (0.3, 0.5, 0.7, 0.85, 1.0, 1.15, 1.3, 1.5)
TRIM_DENSITIES = (1.0, 0.7, 0.5, 0.3)
TRIM_SCALES = (0.5, 0.75, 1.0, 1.25)
# The study's records: every scored point, and the health verdicts of the best ones.
POINTS_ATTR, HEALTH_ATTR = "baseline_points", "baseline_health"


def tuning_grid() -> dict[str, list[StandardRecipe]]:
    """Each tuned recipe's points, in the order they are scored: the scale nearest 1 first
    (the usual choice, so the racing rival is strong early), a density's scales together
    (they share the trimmed task vectors, mergekit/standard.py)."""
    def by_scale(scales):
        return sorted(scales, key=lambda s: (abs(s - 1.0), s))

    grid = {"task_arithmetic": [StandardRecipe(method="task_arithmetic", scale=s)
                                for s in by_scale(TASK_ARITHMETIC_SCALES)]}
    for method in ("ties", "dare_ties"):
        grid[method] = [StandardRecipe(method=method, scale=s, density=d)
                        for d in TRIM_DENSITIES for s in by_scale(TRIM_SCALES)]
    return grid


def fitness_of_point(point: dict) -> float:
    """A point's search fitness before any guard penalty (a racing estimate when stopped)."""
    return point.get("fitness", point["value"])


def by_fitness(points: dict[str, dict], family: str) -> list[str]:
    """A recipe's fully scored points, highest fitness first (grid order between equals)."""
    order = [p.name for p in tuning_grid()[family]]
    full = [n for n, p in points.items() if p["family"] == family
            and p["race"]["outcome"] == "full"]
    return sorted(full, key=lambda n: (-fitness_of_point(points[n]), order.index(n)))


def family_incumbent(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study,
                     points: dict[str, dict], family: str) -> dict | None:
    """Racing's rival within a recipe: its best fully scored point that keeps every guard
    (a point that broke one carries the guard penalty, and racing a point that keeps them
    against it would stop it on the penalty's account). Guards are scored here, best
    fitness first, until a point keeps them."""
    for name in by_fitness(points, family):
        point = with_guards(recipe, scorer, study, points, name)
        if guards_kept(point) is not False:
            return {"number": name, "value": point["value"],
                    "item_scores": point["item_scores"],
                    "item_gold_logprobs": point.get("item_gold_logprobs", {})}
    return None


def with_guards(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study,
                points: dict[str, dict], name: str) -> dict:
    """A fully scored point with its guards scored (once; kept in the study, and given to
    every point that makes the same merge): its value is then guarded. The guard tasks
    are scored one at a time (`guard_order`) and stop at the first broken one: any broken
    guard costs the same penalty, so the others cannot change the value (their verdicts
    are then absent)."""
    point = points[name]
    if not recipe.guard or "guard" in point:
        return point
    started = time.perf_counter()
    scorer.load(scorer.state_of(StandardRecipe(**point["recipe"])))
    parents = parent_search_scores(study)
    scores, verdicts = {}, {}
    for task in guard_order(points, scorer.guard_tasks):
        scores.update(scorer.evaluate_loaded_all([task]))
        verdicts.update(guard_verdicts(scores, {task: recipe.guard[task]}, parents,
                                       reference_guard_items(study, recipe.guard_rule)))
        if not verdicts[task]["within"]:
            break
    seconds = time.perf_counter() - started
    for twin, other in points.items():
        if twin == name or (point.get("merge_digest") is not None
                            and other.get("merge_digest") == point["merge_digest"]):
            points[twin] = {**other, "guard": verdicts,
                            "value": guarded(fitness_of_point(other), verdicts),
                            "scores": {**other["scores"], **scores_summary(scores)},
                            "seconds": {**other["seconds"],
                                        "guard_seconds": seconds if twin == name else 0.0}}
    study.set_user_attr(POINTS_ATTR, points)
    return points[name]


def guard_order(points: dict[str, dict], tasks: list[str]) -> list[str]:
    """The guard tasks in the order a point's are scored: those broken on more of the
    points guarded so far first (given order between equals), so that a guard every point
    breaks (the overlap specialists' LAMBADA) is scored first and alone."""
    def broken(task):
        return sum(1 for p in points.values()
                   if not p.get("guard", {}).get(task, {"within": True})["within"])

    return sorted(tasks, key=lambda t: (-broken(t), tasks.index(t)))


def guards_kept(point: dict) -> bool | None:
    """Whether a fully scored point kept every guard (None: no guard, not fully scored, or
    its guards not scored: it could not be chosen)."""
    verdicts = point.get("guard")
    return None if not verdicts else all(v["within"] for v in verdicts.values())


def same_merge(points: dict[str, dict], digest: str) -> str | None:
    """A fully scored point whose merge is this one, to the bit."""
    return next((name for name, p in points.items() if p.get("merge_digest") == digest
                 and p["race"]["outcome"] == "full"), None)


def score_point(scorer: CandidateScorer, point: StandardRecipe, family: str,
                rival: dict | None, points: dict[str, dict]) -> dict:
    """One point raced on the search split: its value (guarded, as a Phase 2 candidate's),
    scores, race record and, when fully scored, its per-item scores and guard verdicts; a
    point whose merge was fully scored already takes that point's record (`same_merge_as`)."""
    started = time.perf_counter()
    state = scorer.state_of(point)
    digest = scorer.merge_fingerprint(point)
    merge_seconds = time.perf_counter() - started
    twin = same_merge(points, digest)
    if twin is not None:
        return {**points[twin], "family": family, "recipe": point.model_dump(),
                "same_merge_as": twin,
                "seconds": {"merge_seconds": merge_seconds, "eval_seconds": 0.0}}
    value, scores, timings, record = racing.race(scorer, point, rival, state=state,
                                                 with_guards=False)
    timings["merge_seconds"] += merge_seconds
    entry = {"family": family, "recipe": point.model_dump(), "value": value, "fitness": value,
             "race": record, "scores": scores_summary(scores), "seconds": timings,
             "merge_digest": digest}
    if record["outcome"] == "full":
        entry.update(racing.item_record(scores, list(scorer.weights)))
    return entry


def tune(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study) -> None:
    """Score every point of the grid not yet in the study (each kept there at once). One
    at a time: two points at once on one thread each (`score_concurrently`) took 1.2x
    longer on SmolLM2, the merges waiting on each other and the memo."""
    points = dict(study.user_attrs.get(POINTS_ATTR, {}))
    grid = tuning_grid()
    todo = [(family, p) for family, plan in grid.items() for p in plan if p.name not in points]
    if not todo:
        return
    say(f"tuning the standard recipes on the search split: {len(todo)} points "
        f"({', '.join(f'{len(v)} {k}' for k, v in grid.items())})")
    with progress_bar(True) as bar:
        task = bar.add_task("tuned baselines", total=len(todo))
        for family, point in todo:
            rival = family_incumbent(recipe, scorer, study, points, family)
            points[point.name] = score_point(scorer, point, family, rival, points)
            study.set_user_attr(POINTS_ATTR, points)  # kept as soon as scored
            bar.advance(task)


def best_point(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study,
               points: dict[str, dict], family: str, healthy: bool = False) -> str | None:
    """A recipe's best fully scored point by guarded fitness (grid order between equals);
    `healthy`: the best of those the health check accepts, of the MAX_HEALTH_TRIES best by
    fitness, checked in that order. Points are walked best fitness first and only until none
    left can beat the best found (a point's guarded value is at most its fitness), and a
    point's guards (several health checks' cost) are scored only when it could be chosen:
    the choice is that of guarding and checking every point (a test)."""
    order = [p.name for p in tuning_grid()[family]]

    def best_of(names):
        return min(names, key=lambda n: (-points[n]["value"], order.index(n)), default=None)

    walk = by_fitness(points, family)
    found: list[str] = []
    for name in walk[:MAX_HEALTH_TRIES] if healthy else walk:
        best = best_of(found)
        if best is not None and fitness_of_point(points[name]) < points[best]["value"]:
            break
        if healthy and not health_accepted(
                health_of(recipe, scorer, study, StandardRecipe(**points[name]["recipe"]),
                          name, same_as=points[name].get("same_merge_as")),
                recipe.allow_warning):
            continue
        with_guards(recipe, scorer, study, points, name)
        found.append(name)
    return best_of(found)


def health_of(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study,
              candidate: Genome | StandardRecipe, name: str, same_as: str | None = None) -> str:
    """A baseline's health verdict (checked once, kept in the study; a point that makes
    the same merge as a checked one, `same_as`, takes its verdict)."""
    verdicts = dict(study.user_attrs.get(HEALTH_ATTR, {}))
    if name not in verdicts and same_as in verdicts:
        verdicts[name] = verdicts[same_as]
        study.set_user_attr(HEALTH_ATTR, verdicts)
    if name not in verdicts:
        scorer.load(scorer.state_of(candidate))
        report = child_health(recipe, scorer.model, tokenizer=scorer.tokenizer,
                              stop_when_unhealthy=True)  # only the verdict is kept
        verdicts[name] = report["verdict"]
        study.set_user_attr(HEALTH_ATTR, verdicts)
        say(f"health check of the baseline {name}: {verdicts[name]}")
    return verdicts[name]


@dataclass
class Baselines:
    """The baselines of a run: every model to score on the holdout beside the child, and
    the record of how the tuned ones were chosen."""

    candidates: dict[str, Genome | StandardRecipe]
    record: BaselineSearch
    # a candidate -> the earlier candidate that makes the same merge, to the bit (tuned
    # points only: theirs are the merges fingerprinted); scored once, read twice
    same_merge: dict[str, str] = field(default_factory=dict)


def choose(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study) -> Baselines:
    """Each tuned recipe's best point and best healthy point (`best_point`), the best of
    them overall, and the fixed baselines."""
    points = dict(study.user_attrs.get(POINTS_ATTR, {}))
    candidates: dict[str, Genome | StandardRecipe] = {**FIXED_GENOMES}
    candidates.update({r.name: r for r in FIXED_RECIPES})
    chosen, healthy = {}, {}
    for family in tuning_grid():
        best = best_point(recipe, scorer, study, points, family)
        if best is None:
            continue
        chosen[family] = best
        healthy[family] = best_point(recipe, scorer, study, points, family, healthy=True)
        for name in {chosen[family], healthy[family]} - {None}:
            candidates[name] = StandardRecipe(**points[name]["recipe"])
    for name, candidate in candidates.items():
        health_of(recipe, scorer, study, candidate, name)
    verdicts = study.user_attrs.get(HEALTH_ATTR, {})
    best = max(chosen.values(), key=lambda n: points[n]["value"], default=None)
    kept = [n for n in healthy.values() if n is not None]
    best_healthy = max(kept, key=lambda n: points[n]["value"], default=None)
    rows = [point_row(name, p, verdicts.get(name), bool(recipe.guard))
            for name, p in points.items()]
    seconds = sum(sum(p["seconds"].values()) for p in points.values())
    return Baselines(candidates, BaselineSearch(
        mode="tuned", seconds=seconds, points=rows, chosen=chosen, healthy=healthy,
        best_tuned=best, best_healthy_tuned=best_healthy, **described(candidates, verdicts)),
        same_merge=twin_candidates(candidates, points))


def twin_candidates(candidates: dict, points: dict[str, dict]) -> dict[str, str]:
    """Each candidate whose merge an earlier candidate makes too (same fingerprint), and
    that earlier one."""
    first: dict[str, str] = {}
    twins = {}
    for name in candidates:
        digest = points.get(name, {}).get("merge_digest")
        if digest is None:
            continue
        if digest in first:
            twins[name] = first[digest]
        else:
            first[digest] = name
    return twins


def described(candidates: dict[str, Genome | StandardRecipe], verdicts: dict) -> dict:
    """The record's `health` (every baseline's verdict) and `recipes` (the standard ones'
    values)."""
    return {"health": {n: verdicts.get(n) for n in candidates},
            "recipes": {n: StandardValues(**c.model_dump()) for n, c in candidates.items()
                        if isinstance(c, StandardRecipe)}}


def point_row(name: str, point: dict, verdict: str | None, guard: bool) -> BaselinePoint:
    """A scored point as summary.json's row (`guard`: the run has guards)."""
    return BaselinePoint(name=name, family=point["family"], **point["recipe"],
                         search_fitness=point["value"],
                         fully_scored=point["race"]["outcome"] == "full",
                         items_scored=sum(point["race"]["items_scored"].values()),
                         guards_kept=guards_kept(point), health=verdict,
                         same_merge_as=point.get("same_merge_as"),
                         guards_scored=("guard" in point) if guard else None)


def run_baselines(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study) -> Baselines:
    """The run's baselines by `recipe.baselines`: none, the fixed ones, or those and the
    tuned ones (scored on the search split now, or read back from the study)."""
    if recipe.baselines == "none":
        return Baselines({}, BaselineSearch(mode="none"))
    if recipe.baselines == "fixed":
        candidates = {**FIXED_GENOMES, **{r.name: r for r in FIXED_RECIPES}}
        for name, candidate in candidates.items():
            health_of(recipe, scorer, study, candidate, name)
        verdicts = study.user_attrs.get(HEALTH_ATTR, {})
        return Baselines(candidates, BaselineSearch(mode="fixed",
                                                    **described(candidates, verdicts)))
    tune(recipe, scorer, study)
    return choose(recipe, scorer, study)


def baseline_seeds(recipe: Recipe, scorer: CandidateScorer, study: optuna.Study
                   ) -> dict[str, Genome]:
    """Under genome rule v3, the standard recipes among the run's baselines (each tuned
    recipe's best and best healthy point, task arithmetic 1.0) as v3 genomes: Phase 2's
    first seeds (evolve/phase2.py). The tuning runs here, before the search, instead of
    in the finish (which then reads it back from the study); under v2 nothing."""
    if recipe.genome_rule != "v3" or recipe.baselines == "none":
        return {}
    seeds: dict[str, Genome] = {}
    for name, candidate in run_baselines(recipe, scorer, study).candidates.items():
        if isinstance(candidate, StandardRecipe):
            genome = candidate.genome()
            if genome not in seeds.values():
                seeds[name] = genome
    return seeds
