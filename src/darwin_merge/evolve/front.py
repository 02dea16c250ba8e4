"""The search's two objectives and the child's choice (docs/EVOLVE.md, "The front").

Every fully scored Phase 2 candidate is health-checked in memory (evolve/phase2.py,
`check_scored`), so each has its search fitness (higher is better, the guards' penalty in
it) and its probe excess (lower is better: how far its loss on the health probes exceeds
what the check allows, at worst over the probe sets; above 0 the check fails it). The
Pareto front holds the healthy candidates no other healthy one beats on both. The child:
`--prefer fitness` (the default), the fittest healthy candidate, as before; `--prefer
health`, of the front's candidates whose fitness is within one standard error (of the
fittest's search-split fitness) of the fittest, the one with the lowest probe excess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna

from .gate import SEED_FINDINGS, health_accepted


@dataclass(frozen=True)
class Candidate:
    """A fully scored candidate as the front sees it."""

    number: int
    fitness: float
    excess: float | None  # None: no probe set judges function (a tiny model)
    healthy: bool  # accepted by the health check (--allow-warning counted)

    @property
    def worse_health(self) -> float:
        return math.inf if self.excess is None else self.excess


def dominates(a: Candidate, b: Candidate) -> bool:
    """a is at least as fit and at least as healthy as b, and better on one."""
    return (a.fitness >= b.fitness and a.worse_health <= b.worse_health
            and (a.fitness > b.fitness or a.worse_health < b.worse_health))


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """The healthy candidates no healthy one dominates, fittest first."""
    healthy = [c for c in candidates if c.healthy]
    front = [c for c in healthy if not any(dominates(o, c) for o in healthy)]
    return sorted(front, key=lambda c: (-c.fitness, c.worse_health, c.number))


def preferred(candidates: list[Candidate], prefer: str, stderr: float | None) -> list[int]:
    """The order in which the finish tries candidates for the child (trial numbers): by
    fitness; or, under `health`, first the front's candidates within `stderr` of the
    fittest healthy one, healthiest first, then the rest by fitness."""
    by_fitness = [c.number for c in sorted(candidates, key=lambda c: (-c.fitness, c.number))]
    front = pareto_front(candidates)
    if prefer == "fitness" or not front:
        return by_fitness
    close = [c for c in front if c.fitness >= front[0].fitness - (stderr or 0.0)]
    first = [c.number for c in sorted(close, key=lambda c: (c.worse_health, -c.fitness))]
    return first + [n for n in by_fitness if n not in first]


def front_candidates(study: optuna.Study, trials: list, allow_warning: bool
                     ) -> list[Candidate]:
    """The fully scored `trials` as the front sees them: fitness, probe excess and verdict
    of their in-memory health check (`seed_health`); one never checked counts as healthy
    with no excess known (a study from before every candidate was checked)."""
    verdicts = study.user_attrs.get("seed_health", {})
    findings = study.user_attrs.get(SEED_FINDINGS, {})
    return [Candidate(t.number, t.value, findings.get(str(t.number), {}).get("probe_excess"),
                      health_accepted(verdicts.get(str(t.number), "healthy"), allow_warning))
            for t in trials]
