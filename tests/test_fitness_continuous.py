"""The fitness's continuous term (evolve/scoring.py, docs/EVOLVE.md "Fitness"): the mean of
per-item scores, accuracy plus TIE_BREAK x the clipped gold log-probability."""

from __future__ import annotations

import pytest

from darwin_merge.eval.evaluator import evaluate
from darwin_merge.eval.results import (
    GOLD_LOGPROB_CLIP,
    TaskResult,
    TaskScore,
    gold_logprob_means,
)
from darwin_merge.evolve import racing
from darwin_merge.evolve.scoring import TIE_BREAK, TIE_FREE_ITEMS, fitness_of, item_values
from tiny_models import build_model, char_tokenizer


def result(accuracy: list[float], logprobs: list[float]) -> TaskResult:
    return TaskResult(kind="multiple_choice", split="search", n=len(accuracy), metric="acc",
                      higher_is_better=True, metrics={"acc": sum(accuracy) / len(accuracy)},
                      **gold_logprob_means(logprobs), item_ids=list(range(len(accuracy))),
                      item_scores=accuracy, item_gold_logprobs=logprobs)


def test_candidates_tied_on_accuracy_are_ordered_by_their_gold_logprobs():
    accuracy = [1.0, 0.0, 1.0, 0.0, 1.0]
    sharper = result(accuracy, [-0.2, -1.5, -0.4, -3.0, -0.9])
    blunter = result(accuracy, [-0.3, -1.5, -0.4, -3.5, -0.9])
    weights = {"t": 1.0}
    assert fitness_of({"t": sharper}, weights) > fitness_of({"t": blunter}, weights)
    # the fitness is the mean of the per-item scores, the summary row keeps it
    items = item_values(sharper.item_scores, sharper.item_gold_logprobs)
    assert fitness_of({"t": sharper}, weights) == pytest.approx(sum(items) / len(items))
    summary = TaskScore.from_row(sharper.summary().row())
    assert fitness_of({"t": summary}, weights) == fitness_of({"t": sharper}, weights)


def test_one_item_of_accuracy_is_not_flipped_by_the_continuous_term():
    assert TIE_BREAK * GOLD_LOGPROB_CLIP < 1 / (2 * TIE_FREE_ITEMS)
    n = TIE_FREE_ITEMS  # the bound the constants are chosen for (docs/EVOLVE.md)
    # one item better, every gold answer at the clip and beyond; against every gold answer
    # certain
    better = result([1.0] * (n // 2 + 1) + [0.0] * (n // 2 - 1), [-1e6] * n)
    worse = result([1.0] * (n // 2) + [0.0] * (n // 2), [0.0] * n)
    weights = {"t": 1.0}
    gap = fitness_of({"t": better}, weights) - fitness_of({"t": worse}, weights)
    assert gap >= 1 / n - TIE_BREAK * GOLD_LOGPROB_CLIP > 1 / (2 * n)
    # racing's paired difference of the same two: the same sign
    decision = racing.stop_decision({"t": (better.item_scores, worse.item_scores)}, weights, 1,
                                    {"t": (better.item_gold_logprobs, worse.item_gold_logprobs)})
    assert decision.diff == pytest.approx(gap) and decision.diff > 0


def test_the_evaluators_item_logprobs_average_to_its_mean_gold_logprob():
    model, tok = build_model("llama"), char_tokenizer()
    tasks = ["copa", "lambada_openai", "simple_arithmetic"]  # three log-likelihood kinds
    results = evaluate(model, tok, tasks, split="search", limit=5)
    for task, found in results.items():
        logprobs = found.item_gold_logprobs
        assert logprobs is not None and len(logprobs) == len(found.item_scores) == 5, task
        assert sum(logprobs) / len(logprobs) == pytest.approx(found.mean_gold_logprob, rel=1e-12)
        clipped = [max(-GOLD_LOGPROB_CLIP, lp) for lp in logprobs]
        assert found.mean_clipped_gold_logprob == pytest.approx(sum(clipped) / len(clipped))
        stored = TaskResult.from_row(found.stored())  # the study's rows keep them
        assert stored.item_gold_logprobs == logprobs
        old = {k: v for k, v in found.stored().items()
               if k not in ("item_gold_logprobs", "mean_clipped_gold_logprob")}
        assert TaskResult.from_row(old).item_gold_logprobs is None  # an older row still reads
