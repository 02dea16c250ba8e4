"""Racing's decisions on designed per-item scores (evolve/racing.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import binom

from darwin_merge.eval.evaluator import evaluate
from darwin_merge.eval.results import TaskResult, TaskScore, gold_logprob_means
from darwin_merge.evolve import racing
from darwin_merge.evolve.scoring import TIE_BREAK, guard_verdicts, guarded
from darwin_merge.evolve.study import stopped_within_one_se
from darwin_merge.evolve.summary_tables import racing_line
from darwin_merge.genome import Genome
from darwin_merge.records.search import Phase2Summary
from tiny_models import build_model, char_tokenizer

LIMIT = 40  # items per task; slices end at 10, 20, 40


class ScriptedScorer:
    """A CandidateScorer whose loaded model answers item i of every task with score(i) and,
    given `logprob`, gives its gold answer the log-probability logprob(i)."""

    def __init__(self, score, tasks=("copa",), logprob=None):
        self.weights = {t: 1.0 / len(tasks) for t in tasks}
        self.tasks, self.limit, self.score, self.calls = list(tasks), LIMIT, score, []
        self.guard_tasks, self.logprob = [], logprob

    def state_of(self, genome):
        return {}

    def load(self, state):
        pass

    def evaluate_loaded(self, task, limit, skip=0):
        self.calls.append((task, skip, limit))
        scores = [float(self.score(i)) for i in range(skip, limit)]
        logprobs = None if self.logprob is None else [self.logprob(i) for i in range(skip, limit)]
        return TaskResult(kind="multiple_choice", split="search", n=len(scores), metric="acc",
                          higher_is_better=True, metrics={"acc": sum(scores) / len(scores)},
                          **gold_logprob_means(logprobs or [-1.0] * len(scores)),
                          item_ids=list(range(skip, limit)), item_scores=scores,
                          item_gold_logprobs=logprobs)


def rival(score, value=0.9, logprob=None) -> dict:
    record = {"number": 3, "value": value,
              "item_scores": {"copa": [float(score(i)) for i in range(LIMIT)]}}
    if logprob is not None:
        record["item_gold_logprobs"] = {"copa": [logprob(i) for i in range(LIMIT)]}
    return record


def test_a_clearly_worse_candidate_stops_after_the_first_slice():
    scorer = ScriptedScorer(lambda i: 0)
    value, scores, _, record = racing.race(scorer, Genome(), rival(lambda i: 1))
    assert record["outcome"] == "stopped" and record["incumbent"] == 3
    assert [d["decision"] for d in record["decisions"]] == ["stop"]
    assert scorer.calls == [("copa", 0, 10)]  # 10 of 40 items scored
    assert value == pytest.approx(0.9 - 1.0)  # the rival's fitness plus the paired difference
    assert scores["copa"].n == 10
    decision = record["decisions"][0]
    assert decision["test"] == "sign_exact" and decision["p"] == pytest.approx(0.5 ** 10)
    assert decision["level"] == pytest.approx(racing.nominal_levels()[0])
    assert record["alpha"] == racing.RACE_ALPHA and record["incumbent_stderr"] == 0.0


def test_a_candidate_as_good_as_the_incumbent_grows_to_every_item():
    scorer = ScriptedScorer(lambda i: i % 2)
    value, scores, _, record = racing.race(scorer, Genome(), rival(lambda i: i % 2))
    assert record["outcome"] == "full"
    assert [d["decision"] for d in record["decisions"]] == ["grow", "grow"]
    assert [c[1:] for c in scorer.calls] == [(0, 10), (10, 20), (20, 40)]  # no item twice
    assert scores["copa"].n == 40 and scores["copa"].metrics["acc"] == 0.5
    assert scores["copa"].item_ids == list(range(40))
    assert value == pytest.approx(0.5 - TIE_BREAK)  # the usual fitness with its tie-breaker


def test_a_slightly_worse_candidate_is_not_stopped_on_a_few_items():
    # worse on 1 item of the first 10, equal elsewhere: not enough evidence to stop
    scorer = ScriptedScorer(lambda i: 0 if i == 0 else 1)
    _, _, _, record = racing.race(scorer, Genome(), rival(lambda i: 1))
    assert record["decisions"][0]["decision"] == "grow"


def test_near_the_ceiling_0_wins_against_3_losses_does_not_stop_a_candidate():
    # the candidate misses items 0-2, which the incumbent answers; every other item both
    # answer: exact one-sided p 0.125 at both looks (the old normal rule stopped it)
    scorer = ScriptedScorer(lambda i: i > 2)
    _, _, _, record = racing.race(scorer, Genome(), rival(lambda i: 1))
    assert record["outcome"] == "full"
    assert [d["decision"] for d in record["decisions"]] == ["grow", "grow"]
    assert [d["test"] for d in record["decisions"]] == ["sign_exact"] * 2
    assert [d["p"] for d in record["decisions"]] == [pytest.approx(0.125)] * 2
    for items, look in ((25, 0), (50, 1)):  # 100 items at 90%: both miss some items too
        incumbent = [float(i % 10 != 9) for i in range(items)]
        candidate = [0.0 if i in (0, 1, 2) else s for i, s in enumerate(incumbent)]
        decision = racing.stop_decision({"t": (candidate, incumbent)}, {"t": 1.0}, look)
        assert not decision.stop and decision.p == pytest.approx(0.125)


def test_the_boundaries_spend_the_declared_error_over_both_looks():
    c1, c2 = racing.boundaries()
    assert racing.spent(0.5) == pytest.approx(0.0310, abs=1e-4)
    assert racing.spent(1.0) == pytest.approx(racing.RACE_ALPHA)
    assert (c1, c2) == (pytest.approx(1.8662, abs=1e-3), pytest.approx(1.8849, abs=1e-3))
    # z at look 1 and 2 of the same items: a sum of the first half over sqrt(1/2), then of
    # both halves over 1; correlation sqrt(1/2). Crossing either look: alpha in all
    halves = np.random.default_rng(7).standard_normal((2, 2_000_000))
    z1, z2 = halves[0], (halves[0] + halves[1]) / math.sqrt(2)
    assert np.mean((z1 > c1) | (z2 > c2)) == pytest.approx(racing.RACE_ALPHA, abs=6e-4)
    assert np.mean(z1 > c1) == pytest.approx(racing.spent(0.5), abs=6e-4)


def test_the_exact_test_of_weighted_tasks_counts_every_sign_pattern():
    assert racing.sign_flip_p([(0.1, 2, 9)], 0.1 * (2 - 9)) == pytest.approx(binom.cdf(2, 11, 0.5))
    # two tasks of weights (per item) 0.5 and 0.25: each disagreeing item a win or a loss
    # with chance 1/2; enumerate the 2^5 patterns
    tasks, observed = [(0.5, 0, 2), (0.25, 1, 2)], 0.5 * -2 + 0.25 * -1
    patterns = np.array(np.meshgrid(*[[-1, 1]] * 5)).reshape(5, -1).T
    sums = patterns[:, :2].sum(1) * 0.5 + patterns[:, 2:].sum(1) * 0.25
    assert racing.sign_flip_p(tasks, observed) == pytest.approx(np.mean(sums <= observed + 1e-12))


# -- the rule's error, simulated ------------------------------------------------------
SIMULATED = 10_000


def stopping_looks(candidate: dict, incumbent: dict, weights: dict) -> np.ndarray:
    """The look (0 or 1) at which racing stops each simulated candidate, -1 where it
    grows to every item: `candidate[t]`, `incumbent[t]` are (SIMULATED, items) 0/1 arrays,
    looked at as racing does (slice_ends: the first 25%, then 50% of each task's items).
    The real stop_decision decides each sample; it depends on a sample's items only
    through their paired differences, so on each task's wins and losses, and each distinct
    count is decided once (checked on the first 200 samples' own items)."""
    looks = np.full(SIMULATED, -1)
    for look, share in enumerate(racing.RACE_SLICES[:-1]):
        ends = {t: max(1, math.ceil(a.shape[1] * share)) for t, a in candidate.items()}
        counts = np.concatenate([np.stack([(a & ~b).sum(1), (~a & b).sum(1)], axis=1)
                                 for a, b in ((candidate[t][:, :e], incumbent[t][:, :e])
                                              for t, e in ends.items())], axis=1)
        rows, which = np.unique(counts, axis=0, return_inverse=True)
        stops = np.array([racing.stop_decision(counted_pairs(row, ends), weights, look).stop
                          for row in rows])[which.ravel()]
        for i in range(200):
            own = {t: (candidate[t][i, :e].astype(float).tolist(),
                       incumbent[t][i, :e].astype(float).tolist()) for t, e in ends.items()}
            assert racing.stop_decision(own, weights, look).stop == stops[i]
        looks[(looks == -1) & stops] = look
    return looks


def counted_pairs(row: np.ndarray, ends: dict) -> dict:
    """Per-item scores of `ends[t]` items per task with a row's wins and losses per task
    (every other item both wrong)."""
    pairs = {}
    for k, (task, items) in enumerate(ends.items()):
        wins, losses = int(row[2 * k]), int(row[2 * k + 1])
        rest = items - wins - losses
        pairs[task] = ([1.0] * wins + [0.0] * (losses + rest),
                       [0.0] * wins + [1.0] * losses + [0.0] * rest)
    return pairs


def draws(rng: np.random.Generator, items: int, accuracy: float) -> np.ndarray:
    return rng.random((SIMULATED, items)) < accuracy


@pytest.mark.parametrize("accuracy", [0.5, 0.9])
def test_an_equally_good_candidate_is_stopped_at_most_at_the_declared_rate(accuracy):
    # the done-when criterion: candidate and incumbent of the same true accuracy on
    # independent binary items, both looks; at most alpha + 1 point (the old rule: 4-10%)
    rng = np.random.default_rng(2024)
    for items in (25, 50, 100):
        looks = stopping_looks({"t": draws(rng, items, accuracy)},
                               {"t": draws(rng, items, accuracy)}, {"t": 1.0})
        assert np.mean(looks >= 0) <= racing.RACE_ALPHA + 0.01, (items, np.mean(looks >= 0))


def test_weighted_tasks_stop_an_equally_good_candidate_at_most_at_the_declared_rate():
    rng = np.random.default_rng(2025)
    weights = {"a": 0.7, "b": 0.3}
    candidate = {"a": draws(rng, 60, 0.8), "b": draws(rng, 40, 0.6)}
    incumbent = {"a": draws(rng, 60, 0.8), "b": draws(rng, 40, 0.6)}
    looks = stopping_looks(candidate, incumbent, weights)
    assert np.mean(looks >= 0) <= racing.RACE_ALPHA + 0.01


def test_a_clearly_worse_candidate_is_stopped_at_the_first_look():
    # accuracy 0.3 against the incumbent's 0.8 over 100 items: stopped after 25 items
    rng = np.random.default_rng(11)
    looks = stopping_looks({"t": draws(rng, 100, 0.3)}, {"t": draws(rng, 100, 0.8)},
                           {"t": 1.0})
    assert np.mean(looks == 0) >= 0.9 and np.mean(looks >= 0) >= 0.999


def test_stopped_within_one_se_counts_close_calls_and_reads_old_records():
    def trial(outcome, diff, incumbent_se=0.05, **extra):
        race = {"outcome": outcome, "decisions": [{"diff": diff}], **extra}
        if incumbent_se is not None:
            race["incumbent_stderr"] = incumbent_se
        return SimpleNamespace(user_attrs={"race": race})

    trials = [trial("stopped", -0.04), trial("stopped", -0.2), trial("full", -0.01),
              trial("stopped", -0.01, incumbent_se=None)]  # a record from before
    assert stopped_within_one_se(trials) == 1
    assert stopped_within_one_se(trials[3:]) is None
    assert stopped_within_one_se([SimpleNamespace(user_attrs={})]) is None  # racing off
    line = racing_line(SimpleNamespace(phase2=Phase2Summary(trials=30, stopped_by_racing=12,
                                                            stopped_within_one_se=1)))
    assert line == ("racing: 12 of 30 Phase 2 candidates stopped early, 1 of them within one "
                    "standard error of the incumbent")
    old = Phase2Summary.model_validate({"trials": 30, "stopped_by_racing": 12})
    assert old.stopped_within_one_se is None and "within" not in racing_line(
        SimpleNamespace(phase2=old))
    assert "stopped_within_one_se" not in old.model_dump()


def test_without_an_incumbent_the_first_candidate_is_scored_in_full():
    scorer = ScriptedScorer(lambda i: 1)
    _, scores, _, record = racing.race(scorer, Genome(), None)
    assert record["outcome"] == "full" and not record["decisions"]
    assert scores["copa"].n == LIMIT


def test_slices_scored_apart_combine_into_the_one_evaluation_of_all_items():
    model, tok = build_model("llama"), char_tokenizer()
    whole = evaluate(model, tok, ["copa"], split="search", limit=6)["copa"]
    parts = [evaluate(model, tok, ["copa"], split="search", limit=end, skip=start)["copa"]
             for start, end in ((0, 2), (2, 6))]
    combined = racing.combine(parts)
    assert combined.item_ids == whole.item_ids
    assert combined.item_scores == whole.item_scores
    assert combined.primary == whole.primary and combined.primary_stderr == whole.primary_stderr
    assert combined.mean_gold_logprob == pytest.approx(whole.mean_gold_logprob)
    assert combined.item_gold_logprobs == pytest.approx(whole.item_gold_logprobs)
    assert combined.mean_clipped_gold_logprob == pytest.approx(whole.mean_clipped_gold_logprob)


# -- the continuous per-item scores (docs/EVOLVE.md, "Racing") -------------------------
def test_the_paired_difference_uses_the_items_continuous_parts_when_both_sides_have_them():
    accuracy = [1.0, 0.0, 1.0, 1.0]
    candidate_lp, incumbent_lp = [-0.5, -2.0, -30.0, -1.0], [-1.0, -2.5, -3.0, -1.0]
    pairs = {"t": (accuracy, list(accuracy))}
    with_lp = racing.stop_decision(pairs, {"t": 1.0}, 0, {"t": (candidate_lp, incumbent_lp)})
    # clipped at -10: per item +0.5, +0.5, -7, 0 (nats per character), mean -1.5
    assert with_lp.diff == pytest.approx(TIE_BREAK * -1.5) and with_lp.continuous
    assert with_lp.record(4)["continuous"] is True
    without = racing.stop_decision(pairs, {"t": 1.0}, 0)
    assert without.diff == 0.0 and not without.continuous


def test_racing_pairs_the_continuous_scores_and_keeps_the_exact_test_on_the_binary_part():
    # the candidate misses items 0-2, which the incumbent answers, and its gold answers are
    # 0.5 nats per character less likely everywhere: the exact test still decides on the
    # 0/1 part (p 0.125, not stopped), the difference carries both parts
    scorer = ScriptedScorer(lambda i: i > 2, logprob=lambda i: -1.5)
    value, scores, _, record = racing.race(scorer, Genome(),
                                           rival(lambda i: 1, logprob=lambda i: -1.0))
    first = record["decisions"][0]
    assert first["test"] == "sign_exact" and first["p"] == pytest.approx(0.125)
    assert first["continuous"] is True and first["decision"] == "grow"
    assert first["diff"] == pytest.approx(-3 / 10 - 0.5 * TIE_BREAK)
    assert record["outcome"] == "full"
    assert value == pytest.approx(37 / 40 - 1.5 * TIE_BREAK)
    assert scores["copa"].item_gold_logprobs == [-1.5] * 40
    kept = racing.item_record(scores, ["copa"])
    assert kept["item_gold_logprobs"]["copa"] == [-1.5] * 40
    # an incumbent recorded without log-probabilities: paired on accuracy alone, as before
    _, _, _, old = racing.race(ScriptedScorer(lambda i: i > 2, logprob=lambda i: -1.5),
                               Genome(), rival(lambda i: 1))
    assert old["decisions"][0]["diff"] == pytest.approx(-3 / 10)
    assert old["decisions"][0]["continuous"] is False


# -- guard tasks (evolve/scoring.py) --------------------------------------------------
def task_result(acc: float) -> TaskScore:
    return TaskScore(metric="acc", higher_is_better=True, n=100, metrics={"acc": acc})


def test_a_guard_penalises_only_children_below_the_better_parent_minus_the_tolerance():
    parents = {"father": {"lambada_openai": task_result(0.30)},
               "mother": {"lambada_openai": task_result(0.20)}}
    for child, within, fitness in ((0.26, True, 0.6), (0.24, False, 0.6 - 1.0)):
        verdicts = guard_verdicts({"lambada_openai": task_result(child)},
                                  {"lambada_openai": 0.05}, parents)
        assert verdicts["lambada_openai"]["floor"] == pytest.approx(0.25)  # the father's
        assert verdicts["lambada_openai"]["within"] is within
        assert guarded(0.6, verdicts) == pytest.approx(fitness)


def test_with_a_base_the_guard_floor_is_the_base_even_when_a_parent_scores_higher():
    references = {"father": {"arc_easy": task_result(0.30)},
                  "mother": {"arc_easy": task_result(0.42)},
                  "base": {"arc_easy": task_result(0.40)}}
    verdicts = guard_verdicts({"arc_easy": task_result(0.36)}, {"arc_easy": 0.05}, references)
    assert verdicts["arc_easy"]["reference_model"] == "base"
    assert verdicts["arc_easy"]["floor"] == pytest.approx(0.35)
    assert verdicts["arc_easy"]["within"]  # below the mother's 0.42 - 0.05, above the base's


def items_result(correct: list[int]) -> TaskResult:
    return TaskResult(kind="loglikelihood", split="search", n=len(correct), metric="acc",
                      higher_is_better=True, metrics={"acc": sum(correct) / len(correct)},
                      item_ids=list(range(len(correct))), item_scores=[float(c) for c in correct])


def test_the_paired_guard_breaks_only_a_child_clearly_below_the_floor():
    """50 items, the base right on 14 (0.28), tolerance 0.05. A child four items below
    (0.20, six lost and two gained: the overlap problem's task arithmetic 0.85) breaks the
    floor rule but not the paired one (-0.08 + one SE 0.055 is above -0.05); a child eight
    items below (0.12) breaks both; a child whose items agree with the base's keeps both."""
    base = [1] * 14 + [0] * 36
    near = [0] * 6 + [1] * 8 + [1] * 2 + [0] * 34  # 6 lost, 2 gained
    far = [0] * 10 + [1] * 4 + [1] * 2 + [0] * 34  # 10 lost, 2 gained
    references = {"base": {"lambada_openai": items_result(base)},
                  "father": {"lambada_openai": items_result([1] * 50)}}
    items = {"base": {"lambada_openai": [float(b) for b in base]}}
    tolerance = {"lambada_openai": 0.05}
    for child, floor_kept, paired_kept in ((near, False, True), (far, False, False),
                                           (base, True, True)):
        scores = {"lambada_openai": items_result(child)}
        floor = guard_verdicts(scores, tolerance, references)["lambada_openai"]
        paired = guard_verdicts(scores, tolerance, references, items)["lambada_openai"]
        assert (floor["within"], paired["within"]) == (floor_kept, paired_kept)
        assert paired["rule"] == "paired" and "rule" not in floor
        assert paired["difference"] == pytest.approx(paired["child"] - paired["reference"])
    near_verdict = guard_verdicts({"lambada_openai": items_result(near)}, tolerance,
                                  references, items)["lambada_openai"]
    assert near_verdict["stderr"] == pytest.approx(0.0560, abs=1e-4)
    with pytest.raises(ValueError, match="the same items"):
        guard_verdicts({"lambada_openai": items_result(near[:40])}, tolerance, references,
                       items)
