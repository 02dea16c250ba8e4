"""Racing: score a candidate on a growing slice of the search items, and stop it as soon
as a one-sided test says it is worse than the incumbent (docs/EVOLVE.md).

The incumbent is the best fully scored candidate so far. After each slice but the last
(a look), the candidate's per-item scores are paired with the incumbent's on the
same items (each item's primary score plus its small continuous part, the clipped gold
log-probability, where both sides have those: `scoring.item_values`, the per-item scores
whose mean is the fitness) and `stop_decision` tests "no worse than the incumbent" at that
look's nominal level: the levels spend RACE_ALPHA, the chance of stopping a candidate
exactly as good as the incumbent over all the looks together, with a Pocock-type spending
function (`boundaries`). The test is an exact sign test on the primary scores where every task's
are binary and few items disagree (the continuous parts, below one item by construction,
left out of it), else a normal test on the weighted paired difference. A stopped
candidate's value is the incumbent's fitness plus that paired difference (the estimate
CMA-ES learns from). Otherwise the slice grows. Every decision is returned for the
trial's record.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.stats import binom, norm

from ..eval import metrics
from ..eval.paired import weighted_difference
from ..eval.results import TaskResult, gold_logprob_means
from ..eval.tasks import resolve_tasks, select_items
from ..genome import Genome
from ..mergekit.standard import StandardRecipe
from .scoring import CandidateScorer, fitness_of, item_values, signed

# Share of each task's search items scored before each decision; the last is all of them.
RACE_SLICES = (0.25, 0.5, 1.0)
# The declared one-sided error: the chance that racing stops a candidate exactly as good as
# the incumbent, its looks together (a look: a decision after a slice but the last).
RACE_ALPHA = 0.05
# Every task binary (0/1 scores): the exact test below this many disagreeing items in all
# (a normal approximation is poor there); the normal test otherwise.
EXACT_BELOW = 20


@lru_cache(maxsize=64)
def item_count(task: str, limit: int | None) -> int:
    """How many search items a task has under `limit`."""
    return len(select_items(resolve_tasks([task])[0], "search", limit))


def spent(fraction: float) -> float:
    """The error spent by information fraction `fraction`: Pocock-type spending of
    RACE_ALPHA, alpha ln(1 + (e - 1) t) (all of it at t = 1)."""
    return RACE_ALPHA * math.log(1.0 + (math.e - 1.0) * fraction)


def information_fractions() -> list[float]:
    """Each look's information fraction: the items scored at it over those scored at the
    last look (the last look that can stop, 50% of the items: 0.5 and 1)."""
    looks = RACE_SLICES[:-1]
    return [share / looks[-1] for share in looks]


@cache
def boundaries() -> tuple[float, ...]:
    """Each look's critical z: a candidate stops at look k when its z (the paired
    difference over its SE) is below -c_k. c_1 spends the first look's error alone; c_2
    makes the chance of crossing at look 2 without crossing at look 1, for looks sharing
    their items (z_1, z_2 normal with correlation sqrt(t_1 / t_2)), the error spent between
    them. Two looks (RACE_SLICES); computed once by numerical integration and bisection."""
    first, last = information_fractions()
    rho = math.sqrt(first / last)
    c1 = float(norm.isf(spent(first)))

    def crossing_second_only(c2: float) -> float:  # P(z_1 < c1, z_2 > c2), one-sided
        return quad(lambda z1: norm.pdf(z1) * norm.sf((c2 - rho * z1) / math.sqrt(1 - rho**2)),
                    -12.0, c1, epsabs=1e-13)[0]

    c2 = brentq(lambda c: crossing_second_only(c) - (spent(last) - spent(first)), 0.0, 10.0,
                xtol=1e-12)
    return c1, float(c2)


@cache
def nominal_levels() -> tuple[float, ...]:
    """Each look's one-sided nominal level, 1 - Phi(c_k): what its test is held to."""
    return tuple(float(norm.sf(c)) for c in boundaries())


@dataclass(frozen=True)
class Decision:
    """One look's test of "the candidate is no worse than the incumbent"."""

    stop: bool
    diff: float  # weighted paired difference, candidate minus incumbent (signed: up is better)
    stderr: float | None
    test: str  # "sign_exact" or "normal"
    p: float | None  # one-sided p-value (None: too few items to test)
    level: float  # the look's nominal level; stop when p <= level
    bound: float  # the look's critical z
    continuous: bool = False  # the items' continuous parts in diff and stderr

    def record(self, items: int) -> dict:
        upper = None if self.stderr is None else self.diff + self.bound * self.stderr
        return {"items": items, "diff": self.diff, "stderr": self.stderr,
                "upper_bound": upper, "test": self.test, "p": self.p, "level": self.level,
                "decision": "stop" if self.stop else "grow", "continuous": self.continuous}


@lru_cache(maxsize=512)
def _half_binomial(n: int) -> np.ndarray:
    return binom.pmf(np.arange(n + 1), n, 0.5)


def sign_flip_p(tasks: list[tuple[float, int, int]], observed: float) -> float:
    """Exact one-sided p of sum_t c_t (wins_t - losses_t) <= `observed`, given each task's
    (c_t, wins_t, losses_t): under "no worse", each disagreeing item is a win or a loss
    with chance 1/2 independently. One task: the sign test, binom.cdf(wins, wins + losses)."""
    values, chances = np.zeros(1), np.ones(1)
    for weight, wins, losses in tasks:
        n = wins + losses
        steps = weight * (2.0 * np.arange(n + 1) - n)
        values = (values[:, None] + steps[None, :]).ravel()
        chances = (chances[:, None] * _half_binomial(n)[None, :]).ravel()
    return min(1.0, float(chances[values <= observed + 1e-9 * (1.0 + abs(observed))].sum()))


def _wins_losses(candidate: list[float], incumbent: list[float]) -> tuple[int, int]:
    diffs = [x - y for x, y in zip(candidate, incumbent, strict=True)]
    return diffs.count(1.0), diffs.count(-1.0)


def _binary(scores: list[float]) -> bool:
    """0/1 scores (0/-1 once signed: a metric where lower is better)."""
    values = set(scores)
    return values <= {0.0, 1.0} or values <= {0.0, -1.0}


Pairs = dict[str, tuple[list[float], list[float]]]  # task -> (candidate, incumbent) per item


def stop_decision(pairs: Pairs, weights: dict[str, float], look: int,
                  gold_logprobs: Pairs | None = None) -> Decision:
    """Whether the candidate stops at look `look` (0: after the first slice): `pairs` holds
    each task's (candidate, incumbent) per-item primary scores on the same items, signed so
    that higher is better; `weights` the fitness weights; `gold_logprobs` the same items'
    gold log-probabilities, for the tasks where both sides have them. The paired difference
    and its SE are of the item scores (`scoring.item_values`: the primary score plus the
    continuous part). The exact test (`sign_flip_p`) where every task's primary scores are
    binary and fewer than EXACT_BELOW items disagree on them in all: decided on the primary
    scores alone (the continuous parts of a task differ by less than half an item in all,
    so they cannot carry the evidence to stop); else the normal test of the weighted
    difference over its SE. Stop when p <= the look's nominal level."""
    level, bound = nominal_levels()[look], boundaries()[look]
    continuous = {t: pair for t, pair in (gold_logprobs or {}).items() if t in weights}
    values = {t: tuple(item_values(scores, lps) for scores, lps in
                       zip(pairs[t], continuous.get(t, (None, None)), strict=True))
              for t in weights}
    diff, stderr = weighted_difference(values, weights)
    with_continuous = bool(continuous)
    if all(_binary(a) and _binary(b) for a, b in (pairs[t] for t in weights)):
        counts = [(w / len(pairs[t][0]), *_wins_losses(*pairs[t])) for t, w in weights.items()]
        if sum(wins + losses for _, wins, losses in counts) < EXACT_BELOW:
            p = sign_flip_p(counts, weighted_difference(pairs, weights)[0])
            return Decision(p <= level, diff, stderr, "sign_exact", p, level, bound,
                            with_continuous)
    if stderr is None:
        return Decision(False, diff, stderr, "normal", None, level, bound, with_continuous)
    p = float(diff >= 0) if stderr == 0 else 0.5 * math.erfc(-diff / stderr / math.sqrt(2))
    return Decision(p <= level, diff, stderr, "normal", p, level, bound, with_continuous)


def slice_ends(tasks: list[str], limit: int | None) -> list[dict[str, int]]:
    """For each slice, how many items of each task it ends at."""
    counts = {t: item_count(t, limit) for t in tasks}
    return [{t: max(1, math.ceil(n * share)) for t, n in counts.items()}
            for share in RACE_SLICES]


def combine(parts: list[TaskResult]) -> TaskResult:
    """One task's results over consecutive slices, as one evaluation of all their items
    (the primary metric, a mean over items, and the tie-breakers with each item's gold
    log-probability; not the other metrics)."""
    first = parts[0]
    scores = [s for p in parts for s in p.item_scores]
    logprobs = None if any(p.item_gold_logprobs is None for p in parts) else [
        lp for p in parts for lp in p.item_gold_logprobs]
    ties = gold_logprob_means(logprobs)
    if logprobs is None and first.mean_gold_logprob is not None:  # means without the items
        ties["mean_gold_logprob"] = sum(p.mean_gold_logprob * p.n for p in parts) / len(scores)
    return TaskResult(kind=first.kind, split=first.split, n=len(scores), metric=first.metric,
                      higher_is_better=first.higher_is_better,
                      metrics={first.metric: metrics.mean(scores),
                               f"{first.metric}_stderr": metrics.mean_stderr(scores)},
                      **ties, item_ids=[i for p in parts for i in p.item_ids],
                      item_scores=scores, item_gold_logprobs=logprobs)


def item_record(scores: dict[str, TaskResult], tasks: list[str]) -> dict[str, dict]:
    """What a fully scored candidate keeps to be racing's incumbent, beside its number and
    value: each task's per-item primary scores (`item_scores`) and, where the evaluator
    gave them, gold log-probabilities (`item_gold_logprobs`)."""
    return {"item_scores": {t: scores[t].item_scores for t in tasks},
            "item_gold_logprobs": {t: scores[t].item_gold_logprobs for t in tasks
                                   if scores[t].item_gold_logprobs is not None}}


def paired_items(scores: dict[str, TaskResult], incumbent: dict, ends: dict[str, int]
                 ) -> tuple[Pairs, Pairs]:
    """The candidate's and the incumbent's first `ends[t]` items of each task: their signed
    primary scores, and their gold log-probabilities where both sides have them (an
    incumbent recorded without them, `item_record`, pairs on the primary scores alone)."""
    pairs, gold_logprobs = {}, {}
    rival_logprobs = incumbent.get("item_gold_logprobs") or {}
    for task, end in ends.items():
        result = scores[task]
        pairs[task] = (signed(result.item_scores, result.higher_is_better),
                       signed(incumbent["item_scores"][task][:end], result.higher_is_better))
        if result.item_gold_logprobs is not None and rival_logprobs.get(task) is not None:
            gold_logprobs[task] = (result.item_gold_logprobs, rival_logprobs[task][:end])
    return pairs, gold_logprobs


def race(scorer: CandidateScorer, candidate: Genome | StandardRecipe, incumbent: dict | None,
         state: dict | None = None, with_guards: bool = True) -> tuple[float, dict, dict, dict]:
    """(value, scores, timings, race record) of one candidate (a genome, or a standard
    recipe: the tuned baselines) raced against `incumbent` ({"number", "value",
    "item_scores", optionally "item_gold_logprobs"} of the best full candidate:
    `item_record`; or None: then the candidate is scored in full). `state`: the candidate's
    merged state when the caller has merged it already; `with_guards` False leaves a fully
    scored candidate's guard tasks to the caller (the tuned baselines score them only where
    they can change the choice)."""
    started = time.perf_counter()
    scorer.load(scorer.state_of(candidate) if state is None else state)
    merged = time.perf_counter()
    tasks = list(scorer.weights)
    parts: dict[str, list[TaskResult]] = {t: [] for t in tasks}
    done = dict.fromkeys(tasks, 0)
    decisions = []
    for look, ends in enumerate(slice_ends(tasks, scorer.limit)):
        for task in tasks:
            if ends[task] > done[task]:
                parts[task].append(scorer.evaluate_loaded(task, ends[task], done[task]))
        done = ends
        scores = {t: combine(p) for t, p in parts.items()}
        if incumbent is None or ends == slice_ends(tasks, scorer.limit)[-1]:
            continue
        pairs, gold_logprobs = paired_items(scores, incumbent, ends)
        decision = stop_decision(pairs, scorer.weights, look, gold_logprobs)
        decisions.append(decision.record(sum(ends.values())))
        if decision.stop:
            value = incumbent["value"] + decision.diff
            return value, scores, _timings(started, merged), _record(
                "stopped", incumbent, decisions, ends, scorer.weights)
    full = {t: combine(p) for t, p in parts.items()}
    if with_guards and scorer.guard_tasks:  # guards: once the candidate is through
        full.update(scorer.evaluate_loaded_all(scorer.guard_tasks))
    return (fitness_of(full, scorer.weights), full, _timings(started, merged),
            _record("full", incumbent, decisions, done, scorer.weights))


def _timings(started: float, merged: float) -> dict:
    return {"merge_seconds": merged - started, "eval_seconds": time.perf_counter() - merged}


def incumbent_stderr(incumbent: dict, weights: dict[str, float]) -> float | None:
    """The standard error of the incumbent's fitness over its search items (the weighted
    tasks' SEs in quadrature): how far a stopped candidate's estimate is from it in SEs."""
    errors = [metrics.mean_stderr(incumbent["item_scores"][t]) for t in weights]
    if any(e is None for e in errors):
        return None
    return math.sqrt(sum((w * e) ** 2 for w, e in zip(weights.values(), errors, strict=True)))


def _record(outcome: str, incumbent: dict | None, decisions: list, ends: dict,
            weights: dict[str, float]) -> dict:
    record = {"outcome": outcome, "incumbent": None if incumbent is None else incumbent["number"],
              "items_scored": ends, "decisions": decisions}
    if incumbent is not None:
        record.update(alpha=RACE_ALPHA, incumbent_stderr=incumbent_stderr(incumbent, weights))
    return record
