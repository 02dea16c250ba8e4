"""Paired statistics of the holdout table, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from darwin_merge.eval.paired import (
    bootstrap_p,
    compare,
    compare_weighted,
    mcnemar_exact_p,
    paired_stderr,
)


def discordant(a_only: int, b_only: int, both: int = 0) -> tuple[list[float], list[float]]:
    a = [1.0] * a_only + [0.0] * b_only + [1.0] * both
    b = [0.0] * a_only + [1.0] * b_only + [1.0] * both
    return a, b


@pytest.mark.parametrize("a_only, b_only, p", [
    (10, 2, 2 * (1 + 12 + 66) / 4096),  # 2 * P(X <= 2), X ~ Bin(12, 1/2) = 0.03857
    (0, 6, 2 / 64),
    (5, 5, 1.0),
    (0, 0, 1.0),
])
def test_mcnemar_exact_matches_the_binomial_tail(a_only, b_only, p):
    a, b = discordant(a_only, b_only, both=7)  # concordant items do not count
    assert mcnemar_exact_p(a, b) == pytest.approx(p)


def test_compare_binary_scores_uses_mcnemar_and_the_paired_stderr():
    a, b = discordant(10, 2, both=8)
    result = compare(a, b)
    assert result["test"] == "mcnemar_exact" and result["n"] == 20
    assert result["diff"] == pytest.approx(8 / 20)
    # diffs: ten +1, two -1, eight 0 -> sample sd sqrt((12 - 20 * 0.16) / 19)
    assert result["stderr"] == pytest.approx(math.sqrt((12 - 20 * 0.4 ** 2) / 19) / math.sqrt(20))
    assert result["p"] == pytest.approx(0.0385742, abs=1e-6)


def test_bootstrap_p_of_no_difference_is_one_and_of_a_constant_shift_is_minimal():
    assert bootstrap_p([[1.0, -1.0] * 50], [1.0]) == 1.0
    assert bootstrap_p([[0.2] * 30], [1.0], resamples=999) == pytest.approx(1 / 1000)


def test_bootstrap_p_agrees_with_the_normal_approximation_on_many_items():
    rng = np.random.default_rng(7)
    diffs = list(rng.normal(0.05, 0.5, size=800))
    z = np.mean(diffs) / paired_stderr(diffs)
    normal_p = math.erfc(abs(z) / math.sqrt(2))
    assert bootstrap_p([diffs], [1.0]) == pytest.approx(normal_p, abs=0.01)
    assert bootstrap_p([diffs], [1.0]) == bootstrap_p([diffs], [1.0])  # fixed seed


def test_compare_non_binary_scores_uses_the_bootstrap():
    result = compare([0.5, 0.7, 0.9], [0.5, 0.6, 0.8])
    assert result["test"] == "paired_bootstrap" and result["diff"] == pytest.approx(0.2 / 3)


def test_weighted_comparison_adds_task_differences_and_variances():
    pairs = {"x": discordant(6, 2, both=2), "y": discordant(1, 3, both=6)}
    result = compare_weighted(pairs, {"x": 0.75, "y": 0.25})
    assert result["diff"] == pytest.approx(0.75 * 0.4 + 0.25 * -0.2)
    se_x, se_y = (paired_stderr([p - q for p, q in zip(*pairs[t], strict=True)]) for t in "xy")
    assert result["stderr"] == pytest.approx(math.hypot(0.75 * se_x, 0.25 * se_y))
    assert result["n"] == 20 and 0.0 < result["p"] < 1.0


def test_unequal_item_lists_are_refused():
    with pytest.raises(ValueError):
        compare([1.0, 0.0], [1.0])
