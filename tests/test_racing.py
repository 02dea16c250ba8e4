"""Racing's decisions on designed per-item scores (evolve/racing.py)."""

from __future__ import annotations

import pytest

from darwin_merge.eval.evaluator import evaluate
from darwin_merge.eval.results import TaskResult, TaskScore
from darwin_merge.evolve import racing
from darwin_merge.evolve.scoring import guard_verdicts, guarded
from darwin_merge.genome import Genome
from tiny_models import build_model, char_tokenizer

LIMIT = 40  # items per task; slices end at 10, 20, 40


class ScriptedScorer:
    """A CandidateScorer whose loaded model answers item i of every task with score(i)."""

    def __init__(self, score, tasks=("copa",)):
        self.weights = {t: 1.0 / len(tasks) for t in tasks}
        self.tasks, self.limit, self.score, self.calls = list(tasks), LIMIT, score, []
        self.guard_tasks = []

    def state_of(self, genome):
        return {}

    def load(self, state):
        pass

    def evaluate_loaded(self, task, limit, skip=0):
        self.calls.append((task, skip, limit))
        scores = [float(self.score(i)) for i in range(skip, limit)]
        return TaskResult(kind="multiple_choice", split="search", n=len(scores), metric="acc",
                          higher_is_better=True, metrics={"acc": sum(scores) / len(scores)},
                          mean_gold_logprob=-1.0, item_ids=list(range(skip, limit)),
                          item_scores=scores)


def rival(score, value=0.9) -> dict:
    return {"number": 3, "value": value, "item_scores": {"copa": [float(score(i))
                                                                  for i in range(LIMIT)]}}


def test_a_clearly_worse_candidate_stops_after_the_first_slice():
    scorer = ScriptedScorer(lambda i: 0)
    value, scores, _, record = racing.race(scorer, Genome(), rival(lambda i: 1))
    assert record["outcome"] == "stopped" and record["incumbent"] == 3
    assert [d["decision"] for d in record["decisions"]] == ["stop"]
    assert scorer.calls == [("copa", 0, 10)]  # 10 of 40 items scored
    assert value == pytest.approx(0.9 - 1.0)  # the rival's fitness plus the paired difference
    assert scores["copa"].n == 10


def test_a_candidate_as_good_as_the_incumbent_grows_to_every_item():
    scorer = ScriptedScorer(lambda i: i % 2)
    value, scores, _, record = racing.race(scorer, Genome(), rival(lambda i: i % 2))
    assert record["outcome"] == "full"
    assert [d["decision"] for d in record["decisions"]] == ["grow", "grow"]
    assert [c[1:] for c in scorer.calls] == [(0, 10), (10, 20), (20, 40)]  # no item twice
    assert scores["copa"].n == 40 and scores["copa"].metrics["acc"] == 0.5
    assert scores["copa"].item_ids == list(range(40))
    assert value == pytest.approx(0.5 - 1e-3)  # the usual fitness with its tie-breaker


def test_a_slightly_worse_candidate_is_not_stopped_on_a_few_items():
    # worse on 1 item of the first 10, equal elsewhere: not enough evidence to stop
    scorer = ScriptedScorer(lambda i: 0 if i == 0 else 1)
    _, _, _, record = racing.race(scorer, Genome(), rival(lambda i: 1))
    assert record["decisions"][0]["decision"] == "grow"


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
