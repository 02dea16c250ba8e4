"""The search's two objectives (evolve/front.py): the Pareto front of the health-checked
candidates and the order `--prefer` gives the finish, on hand-made candidates; the probe
excess a health report gives (evolve/gate.py)."""

from __future__ import annotations

from darwin_merge.evolve.front import Candidate, pareto_front, preferred
from darwin_merge.evolve.gate import health_findings, probe_excess

# trial: fitness, probe excess, healthy. 2 is beaten on both by 1; 5 ties 0 on fitness with
# a worse excess; 3 is the fittest but unhealthy.
CANDIDATES = [Candidate(0, 0.70, 0.10, True), Candidate(1, 0.68, -0.20, True),
              Candidate(2, 0.65, -0.10, True), Candidate(3, 0.72, -0.50, False),
              Candidate(4, 0.60, -0.30, True), Candidate(5, 0.70, 0.20, True)]


def test_the_front_holds_the_healthy_candidates_no_healthy_one_beats_on_both():
    assert [c.number for c in pareto_front(CANDIDATES)] == [0, 1, 4]


def test_prefer_fitness_tries_the_candidates_by_fitness():
    assert preferred(CANDIDATES, "fitness", 0.05) == [3, 0, 5, 1, 2, 4]


def test_prefer_health_tries_the_healthiest_front_candidate_within_one_se_first():
    # within 0.03 of the fittest healthy one (0.70): trials 0 and 1; 1 has the lower excess
    assert preferred(CANDIDATES, "health", 0.03) == [1, 0, 3, 5, 2, 4]
    # within 0.001 only trial 0 itself: the same child as by fitness among the healthy
    assert preferred(CANDIDATES, "health", 0.001) == [0, 3, 5, 1, 2, 4]


def test_without_a_measured_excess_the_front_is_the_fittest():
    blind = [Candidate(n, f, None, True) for n, f in ((0, 0.5), (1, 0.6), (2, 0.6))]
    assert [c.number for c in pareto_front(blind)] == [1, 2]


def test_the_probe_excess_is_the_worst_judged_set_over_its_allowed_loss():
    report = {"verdict": "unhealthy", "reasons": ["CODE"],
              "function_unjudged": ["NOISE"],
              "probe_sets": {"CODE": {"loss": {"child": 3.0}, "allowed_loss": 2.5},
                             "PROSE": {"loss": {"child": 2.0}, "allowed_loss": 2.25},
                             "NOISE": {"loss": {"child": 9.0}, "allowed_loss": 8.0}}}
    assert probe_excess(report) == 0.5
    assert health_findings(report)["probe_excess"] == 0.5
    assert probe_excess({**report, "function_unjudged": ["CODE", "PROSE", "NOISE"]}) is None
