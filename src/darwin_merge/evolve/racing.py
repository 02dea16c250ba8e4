"""Racing: score a candidate on a growing slice of the search items, and stop it as soon
as a confidence bound says it cannot beat the incumbent (docs/EVOLVE.md).

The incumbent is the best fully scored candidate so far. After each slice but the last,
the candidate's per-item primary scores are paired with the incumbent's on the same
items: if the weighted difference plus RACE_Z standard errors is still below zero, the
candidate stops there, and its value is the incumbent's fitness plus that paired
difference (the estimate CMA-ES learns from). Otherwise the slice grows. Every decision
is returned for the trial's record.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache

from ..eval import metrics
from ..eval.paired import weighted_difference
from ..eval.results import TaskResult
from ..eval.tasks import resolve_tasks, select_items
from ..genome import Genome
from ..mergekit.standard import StandardRecipe
from .scoring import CandidateScorer, fitness_of

# Share of each task's search items scored before each decision; the last is all of them.
RACE_SLICES = (0.25, 0.5, 1.0)
# One-sided bound: stop when diff + 1.64 SE < 0 (the candidate is worse at about 95%).
RACE_Z = 1.64


@lru_cache(maxsize=64)
def item_count(task: str, limit: int | None) -> int:
    """How many search items a task has under `limit`."""
    return len(select_items(resolve_tasks([task])[0], "search", limit))


def slice_ends(tasks: list[str], limit: int | None) -> list[dict[str, int]]:
    """For each slice, how many items of each task it ends at."""
    counts = {t: item_count(t, limit) for t in tasks}
    return [{t: max(1, math.ceil(n * share)) for t, n in counts.items()}
            for share in RACE_SLICES]


def combine(parts: list[TaskResult]) -> TaskResult:
    """One task's results over consecutive slices, as one evaluation of all their items
    (the primary metric, a mean over items, and the tie-breaker; not the other metrics)."""
    first = parts[0]
    scores = [s for p in parts for s in p.item_scores]
    tie = None if first.mean_gold_logprob is None else \
        sum(p.mean_gold_logprob * p.n for p in parts) / len(scores)
    return TaskResult(kind=first.kind, split=first.split, n=len(scores), metric=first.metric,
                      higher_is_better=first.higher_is_better,
                      metrics={first.metric: metrics.mean(scores),
                               f"{first.metric}_stderr": metrics.mean_stderr(scores)},
                      mean_gold_logprob=tie, item_ids=[i for p in parts for i in p.item_ids],
                      item_scores=scores)


def signed(result_scores: list[float], higher_is_better: bool) -> list[float]:
    return result_scores if higher_is_better else [-s for s in result_scores]


def race(scorer: CandidateScorer, candidate: Genome | StandardRecipe, incumbent: dict | None,
         state: dict | None = None, with_guards: bool = True) -> tuple[float, dict, dict, dict]:
    """(value, scores, timings, race record) of one candidate (a genome, or a standard
    recipe: the tuned baselines) raced against `incumbent` ({"number", "value",
    "item_scores"} of the best full candidate, or None: then the candidate is scored in
    full). `state`: the candidate's merged state when the caller has merged it already;
    `with_guards` False leaves a fully scored candidate's guard tasks to the caller (the
    tuned baselines score them only where they can change the choice)."""
    started = time.perf_counter()
    scorer.load(scorer.state_of(candidate) if state is None else state)
    merged = time.perf_counter()
    tasks = list(scorer.weights)
    parts: dict[str, list[TaskResult]] = {t: [] for t in tasks}
    done = dict.fromkeys(tasks, 0)
    decisions = []
    for ends in slice_ends(tasks, scorer.limit):
        for task in tasks:
            if ends[task] > done[task]:
                parts[task].append(scorer.evaluate_loaded(task, ends[task], done[task]))
        done = ends
        scores = {t: combine(p) for t, p in parts.items()}
        if incumbent is None or ends == slice_ends(tasks, scorer.limit)[-1]:
            continue
        pairs = {t: (signed(scores[t].item_scores, scores[t].higher_is_better),
                     signed(incumbent["item_scores"][t][:ends[t]],
                            scores[t].higher_is_better)) for t in tasks}
        diff, stderr = weighted_difference(pairs, scorer.weights)
        upper = None if stderr is None else diff + RACE_Z * stderr
        stop = upper is not None and upper < 0
        decisions.append({"items": sum(ends.values()), "diff": diff, "stderr": stderr,
                          "upper_bound": upper, "decision": "stop" if stop else "grow"})
        if stop:
            value = incumbent["value"] + diff
            return value, scores, _timings(started, merged), _record(
                "stopped", incumbent, decisions, ends)
    full = {t: combine(p) for t, p in parts.items()}
    if with_guards and scorer.guard_tasks:  # guards: once the candidate is through
        full.update(scorer.evaluate_loaded_all(scorer.guard_tasks))
    return (fitness_of(full, scorer.weights), full, _timings(started, merged),
            _record("full", incumbent, decisions, done))


def _timings(started: float, merged: float) -> dict:
    return {"merge_seconds": merged - started, "eval_seconds": time.perf_counter() - merged}


def _record(outcome: str, incumbent: dict | None, decisions: list, ends: dict) -> dict:
    return {"outcome": outcome, "incumbent": None if incumbent is None else incumbent["number"],
            "items_scored": ends, "decisions": decisions}
