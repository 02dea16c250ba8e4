"""Phase 1's proxy: a fitness that costs microseconds (searched by `phase1.py`).

The proxy never runs the model. When the scan measured skill attribution (the default
`attribution` formula), it predicts each fitness task's metric from the scan's per-group
swaps (`proxy_attribution.py`), and can rate a child above both parents. Otherwise (a
`--mri card` scan) it falls back to the first proxy below, which predicts how much of
each fitness task's skill a genome keeps, from three things measured once:

* which parent is better at each task (the *donor*) and by how much (the *gap*), from
  the two parents' real scores on the search split;
* how much each decoder layer matters to the donor for that task: the scan's layer-skip
  distances on the probe sets that the task exercises (tasks.yaml's `probes`);
* how far the parents are apart, tensor by tensor (||mother - father||^2).

For each tensor the merge's expected squared distance from each parent follows in
closed form from its final ratio r, the DARE density d and the DARE-TIES weight w
(father as base): from the father r^2 (1 + w^2 (1-d)/d), from the mother
(1-r)^2 + r^2 w^2 (1-d)/d, in units of ||B - A||^2; transplanted tensors are exactly
one parent. A task's predicted loss is the importance-weighted share of its donor's
layers that the child does not keep; the proxy fitness is minus the gap-weighted sum
of these losses. docs/EVOLVE.md discusses what it can and cannot see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arch.rules import MergeMode
from ..genome import Genome
from ..merge.plan import MergeSettings, PlanRow, plan_merge
from . import proxy_attribution


@dataclass(frozen=True)
class TaskStake:
    """One fitness task as the proxy sees it."""

    name: str
    weight: float  # normalised fitness weight
    donor: str  # "father" or "mother": the parent that is better at it
    gap: float  # |score_mother - score_father| on the search split
    layer_importance: np.ndarray  # (num_layers,), sums to 1, from the donor's scan


@dataclass(frozen=True)
class ProxyData:
    """Everything the proxy needs, measured once per search."""

    infos: list  # TensorInfo of every tensor
    shapes: dict
    mri_ratios: dict[str, float] | None
    delta_sq: dict[str, float]  # ||mother - father||^2 per tensor
    num_layers: int
    stakes: list[TaskStake]
    settings: MergeSettings
    attribution: proxy_attribution.AttributionModel | None = None
    groups: proxy_attribution.GroupIndex | None = None

    @property
    def model(self) -> str:
        """Which proxy this data drives (recorded in phase1.json)."""
        return proxy_attribution.PROXY_MODEL if self.attribution is not None else "distance-v1"


def layer_importance(scan_layers: dict, parent: str, probes: dict[str, float],
                     num_layers: int) -> np.ndarray:
    """Importance of each layer for a weighted set of probes, normalised to sum to 1.

    `scan_layers[parent][layer][probe]` is the scan's layer-skip cosine distance.
    """
    imp = np.zeros(num_layers)
    for layer in range(num_layers):
        entry = scan_layers[parent][layer]
        imp[layer] = sum(w * float(entry.get(p, 0.0)) for p, w in probes.items())
    total = imp.sum()
    return imp / total if total > 0 else np.full(num_layers, 1.0 / num_layers)


def _distances(rows: list[PlanRow], genome: Genome) -> tuple[np.ndarray, np.ndarray]:
    """Expected squared distance of each child tensor from father and mother (units ||B-A||^2)."""
    d_f = np.empty(len(rows))
    d_m = np.empty(len(rows))
    noise_scale = genome.merge_method_weight ** 2 * (1 - genome.density_b) / max(genome.density_b,
                                                                                 1e-3)
    for i, row in enumerate(rows):
        r = row.final_ratio
        if row.mode in (MergeMode.TRANSPLANT_FATHER, MergeMode.EXACT):
            d_f[i], d_m[i] = 0.0, 1.0
        elif row.mode == MergeMode.TRANSPLANT_MOTHER:
            d_f[i], d_m[i] = 1.0, 0.0
        else:
            noise = noise_scale * r * r if row.mode == MergeMode.DARE_TIES else 0.0
            d_f[i], d_m[i] = r * r + noise, (1 - r) ** 2 + noise
    return d_f, d_m


def proxy_fitness(genome: Genome, data: ProxyData) -> float:
    """The proxy's rating of a genome (higher is better): the predicted fitness from the
    scan's attribution when there is one, else the distance proxy."""
    rows = plan_merge(data.infos, data.shapes, genome, data.settings, data.mri_ratios)
    if data.attribution is not None:
        return proxy_attribution.predicted_fitness(rows, data.attribution, data.groups)
    return distance_fitness(rows, genome, data)


def distance_fitness(rows: list[PlanRow], genome: Genome, data: ProxyData) -> float:
    """Minus the predicted, gap-weighted loss of each task's skill (higher is better)."""
    d_f, d_m = _distances(rows, genome)
    weight = np.array([data.delta_sq.get(r.name, 0.0) for r in rows])
    layers = np.array([r.layer if r.layer is not None else -1 for r in rows])
    loss = 0.0
    for stake in data.stakes:
        dist = d_f if stake.donor == "father" else d_m
        per_layer = np.zeros(data.num_layers + 1)  # last slot: tensors outside the layers
        norm = np.zeros(data.num_layers + 1)
        np.add.at(per_layer, layers, weight * dist)
        np.add.at(norm, layers, weight)
        kept_loss = np.divide(per_layer, norm, out=np.zeros_like(per_layer), where=norm > 0)
        importance = np.append(stake.layer_importance, stake.layer_importance.mean())
        importance = importance / importance.sum()
        loss += stake.weight * stake.gap * float(importance @ kept_loss)
    return -loss
