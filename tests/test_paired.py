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


def normal_p(diff: float, stderr: float) -> float:
    """The two-sided p of a mean difference under the normal approximation."""
    return math.erfc(abs(diff) / stderr / math.sqrt(2.0))


def differences(mean: float, sd: float, n: int, seed: int) -> np.ndarray:
    """n normal draws moved to exactly this mean and sample standard deviation."""
    z = np.random.default_rng(seed).normal(size=n)
    return mean + sd * (z - z.mean()) / z.std(ddof=1)


def scores_with_differences(diffs: np.ndarray, seed: int) -> tuple[list[float], list[float]]:
    """Two models' non-binary scores on the same items whose differences are `diffs`."""
    b = np.random.default_rng(seed).uniform(0.2, 0.8, len(diffs))
    return list(b + diffs), list(b)


def test_the_bootstrap_p_of_non_binary_scores_is_the_normal_answer_at_large_n():
    """400 items whose differences have mean 0.05 and SD 0.5, two standard errors: the
    paired bootstrap's p is the normal approximation's, 2 (1 - Phi(2)) = 0.0455 (the
    central limit holds here), to 0.01, and differences around zero give a p near 1.
    (Fails if the p is one-sided or the bootstrap is not centred on the null.)"""
    diffs = differences(0.05, 0.5, 400, seed=1)
    result = compare(*scores_with_differences(diffs, seed=2))
    assert result["test"] == "paired_bootstrap"
    assert result["diff"] == pytest.approx(0.05) and result["stderr"] == pytest.approx(0.025)
    assert result["p"] == pytest.approx(normal_p(0.05, 0.025), abs=0.01)
    centred = compare(*scores_with_differences(diffs - diffs.mean(), seed=2))
    assert centred["p"] > 0.95


def test_the_weighted_bootstrap_is_the_normal_answer_for_independent_tasks():
    """Two tasks of 300 and 200 items weighted 0.75 / 0.25, their differences of opposite
    signs (means 0.08 and -0.1, SD 0.6): the weighted difference 0.035, its standard error
    sqrt(0.75^2 0.36 / 300 + 0.25^2 0.36 / 200) = 0.0281 (independent tasks) and the
    bootstrap's p, that of the normal approximation (0.21), to 0.015. (Fails if the
    weights are left out of the bootstrap: equal weights put the difference at -0.01 and
    the p near 0.7.)"""
    diffs = {"x": differences(0.08, 0.6, 300, seed=3), "y": differences(-0.1, 0.6, 200, seed=4)}
    pairs = {t: scores_with_differences(d, seed=5) for t, d in diffs.items()}
    result = compare_weighted(pairs, {"x": 0.75, "y": 0.25})
    stderr = math.sqrt(0.75 ** 2 * 0.36 / 300 + 0.25 ** 2 * 0.36 / 200)
    assert result["diff"] == pytest.approx(0.035) and result["stderr"] == pytest.approx(stderr)
    assert result["p"] == pytest.approx(normal_p(0.035, stderr), abs=0.015)
    assert result["n"] == 500 and result["test"] == "paired_bootstrap"


def test_unequal_item_lists_are_refused():
    with pytest.raises(ValueError):
        compare([1.0, 0.0], [1.0])
