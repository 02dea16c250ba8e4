"""From the scan's measurements to one prescribed mother share per tensor.

Two formulas (scan.json's `formula`):

`attribution` (the default, docs/SCAN.md says why): the mother's share of a tensor is
`sigmoid(z / temperature + CONTRAST_WEIGHT * contrast + OWNERSHIP_WEIGHT * ownership)`,
where `z` is the attribution's evidence that the mother's version of the tensor's group
serves the fitness (scan/attribution.py), `contrast` the difference of the parents' layer
importances (each z-scored over its own layers), and `ownership` which parent moved the
tensor further from the base (0 without a base). Identical parents give 0.5 exactly.

`card`: the source model card's formula, kept exactly as the faithful reproduction:
combined = static * 0.4 + probe * 0.6 (per parent); mri_ratio = combined_b /
(combined_a + combined_b), 0.5 when both are 0. A tensor inside decoder layer l
takes that layer's probe score; a tensor outside the decoder layers (embeddings,
final norm, per-layer-embedding tables, vision/audio towers) takes the mean probe
score over the layers, as the design notes propose: no single layer owns it.
"""

from __future__ import annotations

import math

from ..genome import TRANSPLANT_HIGH, TRANSPLANT_LOW

FORMULAS = ("attribution", "card")
DEFAULT_FORMULA = "attribution"
DEFAULT_TEMPERATURE = 1.0
CONTRAST_WEIGHT = 0.25
OWNERSHIP_WEIGHT = 2.0
STATIC_WEIGHT = 0.4
PROBE_WEIGHT = 0.6


def combined_score(static: float, probe: float) -> float:
    return static * STATIC_WEIGHT + probe * PROBE_WEIGHT


def mri_ratio(combined_a: float, combined_b: float) -> float:
    """The mother's share: combined_b / (combined_a + combined_b), 0.5 if both are 0."""
    total = combined_a + combined_b
    if total == 0:
        return 0.5
    return min(1.0, max(0.0, combined_b / total))


def tensor_probe_score(layer: int | None, scores: list[float]) -> float:
    """A tensor's probe score: its layer's, or the mean over layers outside them."""
    if layer is not None and 0 <= layer < len(scores):
        return scores[layer]
    return sum(scores) / len(scores) if scores else 0.0


def tensor_entries(infos, static_a: dict, static_b: dict, scores_a: list[float],
                   scores_b: list[float]) -> dict[str, dict]:
    """scan.json's "tensors" table: both parents' stats, combined scores and mri_ratio."""
    table = {}
    for info in infos:
        a, b = static_a[info.name], static_b[info.name]
        combined_a = combined_score(a["static"], tensor_probe_score(info.layer, scores_a))
        combined_b = combined_score(b["static"], tensor_probe_score(info.layer, scores_b))
        table[info.name] = {
            "entropy_a": a["entropy"], "std_a": a["std"], "norm_a": a["norm"],
            "static_a": a["static"],
            "entropy_b": b["entropy"], "std_b": b["std"], "norm_b": b["norm"],
            "static_b": b["static"],
            "combined_a": combined_a, "combined_b": combined_b,
            "mri_ratio": mri_ratio(combined_a, combined_b),
            "component": info.component, "layer": info.layer, "block": info.block,
        }
    return table


def transplant_counts(ratios: dict[str, float], low: float = TRANSPLANT_LOW,
                      high: float = TRANSPLANT_HIGH) -> dict[str, int]:
    """How many tensors the MRI alone would take whole from the father / the mother."""
    return {
        "father": sum(1 for r in ratios.values() if r < low),
        "mother": sum(1 for r in ratios.values() if r > high),
        "blended": sum(1 for r in ratios.values() if low <= r <= high),
    }


def importance_contrast(scores_a: list[float], scores_b: list[float]) -> list[float]:
    """Per layer: the mother's importance z-score minus the father's (each over its own
    layers), so a layer counts for what it is to each parent, not in absolute terms."""

    def zscores(values: list[float]) -> list[float]:
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return [(v - mean) / sd if sd > 0 else 0.0 for v in values]

    if not scores_a:
        return []
    return [b - a for a, b in zip(zscores(scores_a), zscores(scores_b), strict=True)]


def attribution_ratio(z: float, contrast: float, ownership: float,
                      temperature: float = DEFAULT_TEMPERATURE) -> float:
    """The mother's share: a logistic of the evidence (see the module docstring)."""
    logit = z / temperature + CONTRAST_WEIGHT * contrast + OWNERSHIP_WEIGHT * ownership
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))
