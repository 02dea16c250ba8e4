"""Paired comparisons of two models scored on the same items: difference, SE, p-value.

Pure statistics over per-item scores (`item_scores` of an evaluation). For 0/1 scores
the p-value is the exact McNemar test (a two-sided binomial test on the discordant
items); otherwise a paired bootstrap with a fixed seed, which also combines several
tasks into one weighted difference (resampling the items within each task).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

RESAMPLES = 10_000
SEED = 0


def p_text(p: float, test: str | None) -> str:
    """A p-value for a report: a bootstrap's p at its floor (1 / (resamples + 1), no
    resample as extreme as the observed difference) is a bound, not a value:
    `< 1e-4 (10,000 resamples)`."""
    floor = {"paired_bootstrap": 1, "hierarchical_bootstrap": 2}.get(test or "", 0)
    if floor and p <= (floor + 1e-9) / (RESAMPLES + 1):
        bound = 10.0 ** math.ceil(math.log10((floor + 1e-9) / (RESAMPLES + 1)))
        return f"< {bound:.0e} ({RESAMPLES:,} resamples)".replace("e-0", "e-")
    return f"{p:.3g}"


def mcnemar_exact_p(a: list[float], b: list[float]) -> float:
    """Two-sided exact McNemar p-value of paired 0/1 scores (1.0 with no discordant item)."""
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x > y)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if y > x)
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(a_only, b_only), discordant, 0.5)))


def paired_stderr(diffs: list[float]) -> float | None:
    """Standard error of the mean paired difference (None under two items)."""
    n = len(diffs)
    if n < 2:
        return None
    return float(np.std(diffs, ddof=1) / math.sqrt(n))


def bootstrap_p(diffs_by_task: list[list[float]], weights: list[float],
                resamples: int = RESAMPLES, seed: int = SEED) -> float:
    """Two-sided paired-bootstrap p-value of sum_t w_t * mean(diffs_t) = 0.

    Items are resampled within each task; the p-value is the share of resampled
    differences at least as far from the observed one as the observed one is from 0
    (the bootstrap distribution shifted to the null), with the usual +1 correction.
    """
    rng = np.random.default_rng(seed)
    observed = sum(w * float(np.mean(d)) for d, w in zip(diffs_by_task, weights, strict=True))
    resampled = np.zeros(resamples)
    for diffs, weight in zip(diffs_by_task, weights, strict=True):
        values = np.asarray(diffs, dtype=float)
        picks = rng.integers(0, len(values), size=(resamples, len(values)))
        resampled += weight * values[picks].mean(axis=1)
    extreme = int(np.sum(np.abs(resampled - observed) >= abs(observed)))
    return (extreme + 1) / (resamples + 1)


def _is_binary(values: list[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def compare(a: list[float], b: list[float]) -> dict:
    """Model a against model b on the same items: mean difference a - b, its SE, p."""
    if len(a) != len(b) or not a:
        raise ValueError("a paired comparison needs the same, non-empty list of items")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    if _is_binary(a) and _is_binary(b):
        p, test = mcnemar_exact_p(a, b), "mcnemar_exact"
    else:
        p, test = bootstrap_p([diffs], [1.0]), "paired_bootstrap"
    return {"diff": float(np.mean(diffs)), "stderr": paired_stderr(diffs), "p": p,
            "test": test, "n": len(diffs)}


def weighted_difference(pairs: dict[str, tuple[list[float], list[float]]],
                        weights: dict[str, float]) -> tuple[float, float | None]:
    """sum_t w_t * mean(a_t - b_t) and its standard error (tasks are independent)."""
    diff, variance = 0.0, 0.0
    for task, weight in weights.items():
        diffs = [x - y for x, y in zip(*pairs[task], strict=True)]
        stderr = paired_stderr(diffs)
        diff += weight * float(np.mean(diffs))
        variance = None if stderr is None or variance is None else \
            variance + (weight * stderr) ** 2
    return diff, None if variance is None else math.sqrt(variance)


def compare_weighted(pairs: dict[str, tuple[list[float], list[float]]],
                     weights: dict[str, float]) -> dict:
    """The weighted sum over tasks of a - b (a fitness difference): SE and bootstrap p."""
    names = list(weights)
    diffs = [[x - y for x, y in zip(*pairs[t], strict=True)] for t in names]
    diff, stderr = weighted_difference(pairs, weights)
    return {"diff": diff, "stderr": stderr,
            "p": bootstrap_p(diffs, [weights[t] for t in names]),
            "test": "paired_bootstrap", "n": sum(len(d) for d in diffs)}


def hierarchical_bootstrap(diffs_by_task: dict[str, np.ndarray], weights: dict[str, float],
                           resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """The mean over search seeds of a weighted paired difference, with a confidence
    interval that resamples seeds and items together (issue 34's benchmark).

    `diffs_by_task[t]` is a (seeds, items) array: row s holds, item by item, the difference
    between seed s's child and the other model (every seed scored on the same items). Each
    resample draws the seeds with replacement and, independently, each task's items with
    replacement; its statistic is sum_t w_t * mean over the drawn seeds and items. Returns
    the observed mean, the resamples' standard deviation, the 2.5 and 97.5 percentiles, and
    the two-sided p read off the same resamples (twice the share on the far side of zero,
    +1 corrected; its floor is 2 / (resamples + 1)), so that the interval leaves out zero
    exactly when p < 0.05.
    """
    rng = np.random.default_rng(seed)
    arrays = {t: np.asarray(d, dtype=float) for t, d in diffs_by_task.items()}
    n_seeds = {a.shape[0] for a in arrays.values()}
    if len(n_seeds) != 1 or any(a.ndim != 2 or a.shape[1] == 0 for a in arrays.values()):
        raise ValueError("every task needs a (seeds, items) array with the same seeds")
    seeds = n_seeds.pop()
    seed_counts = np.zeros((resamples, seeds))
    np.add.at(seed_counts, (np.arange(resamples)[:, None],
                            rng.integers(0, seeds, size=(resamples, seeds))), 1.0)
    observed, resampled = 0.0, np.zeros(resamples)
    for task, values in arrays.items():
        items = values.shape[1]
        item_counts = np.zeros((resamples, items))
        np.add.at(item_counts, (np.arange(resamples)[:, None],
                                rng.integers(0, items, size=(resamples, items))), 1.0)
        observed += weights[task] * float(values.mean())
        resampled += weights[task] * np.einsum("bs,si,bi->b", seed_counts, values,
                                               item_counts) / (seeds * items)
    far_side = int(min(np.sum(resampled <= 0.0), np.sum(resampled >= 0.0)))
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"diff": observed, "stderr": float(np.std(resampled, ddof=1)),
            "ci_low": float(low), "ci_high": float(high),
            "p": min(1.0, 2 * (far_side + 1) / (resamples + 1)),
            "test": "hierarchical_bootstrap",
            "seeds": seeds, "n": sum(a.shape[1] for a in arrays.values())}
