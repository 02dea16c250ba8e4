"""The Phase 1 proxy built from the scan's skill attribution (docs/EVOLVE.md).

The scan measured, per tensor group g and fitness task t, on the same search items:

- graft_g: score(father with the mother's g) - score(father)
- revert_g: score(mother) - score(mother with the father's g)

Per task, the proxy reads the side whose swaps add up closest to the parents' gap
D = s_M - s_F (the preferred parent's, the scan's `context`, on a tie). A skill that
several groups each carry whole is redundant on one side: there each swap alone changes
little (the specialists pair's reversal skill, taken out of the mother one group at a
time) and the swaps cannot say where the skill lies. On the demo pair the reverts fit: the
mother's embeddings raise the father's arithmetic when grafted, yet cost the mother
nothing to give back. Swaps do not add up exactly, so the effects e_g are rescaled to
explain D: c_g = e_g * D / sum(e) (the factor kept within [1/4, 4]; what is left of D
follows the child's overall mother share m).

A genome gives each group a mother share m_g (delta-weighted mean over its tensors of the
final ratio, 1 or 0 where a tensor is transplanted), and the child's item score is
predicted as

    s_F + sum_g c_g m_g + (D - sum_g c_g) m + KAPPA * sum_g |c_g| m_g (1 - m_g)

The last term is the bend of interpolation: how much more (KAPPA > 0) or less than its
share a blend keeps of each group's edge. The scan measures it per task once, on the
parents' midpoint: score(midpoint) - (s_F + s_M) / 2 = KAPPA * sum_g |c_g| / 4 (on the
demo pair's line anchors a blend kept about 3/4 of the better parent's edge halfway).

Nothing ties the prediction to the segment between the parents: a group whose effect
opposes the parents' gap (the father's version does better for a skill the mother leads)
lifts a child that takes it above the mother. The item score (a log-probability) is
mapped to the task's primary metric by a logistic curve fitted on the scan's own
evaluations (each records its share of items answered right: dozens of points along the
task's range), or, for a metric the scan cannot count (exact match of a generation),
through both parents' metrics on the search split (a line for a metric outside [0, 1]).

What it cannot see: interactions between groups beyond the rescaling (a skill spread
over layers that only works whole), DARE's drop noise and TIES's sign election (it
treats every tensor as a blend at its ratio). On the tiny trio, whose skills break
abruptly halfway, it ranks children poorly; docs/EVOLVE.md has the measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..arch.rules import MergeMode
from ..merge.plan import PlanRow
from ..scan.attribution import group_of

# The proxy's version in phase1.json's identity: a new model re-runs Phase 1.
PROXY_MODEL = "attribution-v3"


@dataclass(frozen=True)
class MetricLink:
    """The task's primary metric as a function of its mean item score: logistic for a
    metric in [0, 1] (accuracy saturates where the gold answer is already likely), a line
    otherwise: metric = f(intercept + slope * score)."""

    intercept: float
    slope: float
    bounded: bool
    source: str  # "scan" (fitted on the scan's evaluations) or "parents" (through both)

    def metric(self, score: float) -> float:
        link = self.intercept + self.slope * score
        return 1.0 / (1.0 + math.exp(-link)) if self.bounded else link


@dataclass(frozen=True)
class TaskAttribution:
    """One fitness task: the parents' item scores, the swaps per group, the bend and the
    metric link."""

    name: str
    weight: float  # normalised fitness weight
    father: float  # mean item score (the scan's probe items)
    mother: float
    effect: np.ndarray  # (groups,) c_g: each group's share of the parents' gap
    kappa: float  # the bend of interpolation, from the scan's midpoint
    link: MetricLink


@dataclass(frozen=True)
class AttributionModel:
    groups: tuple[str, ...]
    tasks: tuple[TaskAttribution, ...]


# Shares in [0, 1] are clipped this far from 0 and 1 before the logit (a parent at 0/100
# is not infinitely bad).
METRIC_CLIP = 0.01
# Logit (or metric) per unit of a task's item-score spread when nothing can tell.
DEFAULT_SLOPE_PER_SCALE = 1.0
# How far the swaps' sum may be rescaled to explain the parents' gap.
RESCALE_LIMITS = (0.25, 4.0)
# The bend of interpolation is kept within these bounds (at 2 a halfway blend keeps the
# whole edge of the better parent); 0 for a scan made before the midpoint was measured.
KAPPA_LIMITS = (-2.0, 2.0)


def _logit(p: float) -> float:
    p = min(max(p, METRIC_CLIP), 1 - METRIC_CLIP)
    return math.log(p / (1 - p))


def fitted_link(task: dict) -> MetricLink | None:
    """Least squares of logit(acc) on the mean item score over the scan's evaluations
    (parents, midpoint, every swap: dozens of points along the task's own range); None
    when the scan did not count hits, or the points do not rise with the score."""
    points = task.get("calibration")
    if points is None or len(set(points["score"])) < 3:
        return None
    x = np.array(points["score"])
    y = np.array([_logit(a) for a in points["metric"]])
    slope, intercept = np.polyfit(x, y, 1)
    return MetricLink(float(intercept), float(slope), True, "scan") if slope > 0 else None


def parents_link(task: dict, metrics: tuple[float, float], slope_per_scale: float | None
                 ) -> MetricLink | None:
    """The link through both parents' metrics on the search split; with their item scores
    too close to tell (under a tenth of the spread) or disagreeing with the metric, the
    given slope (None: no link)."""
    bounded = all(0.0 <= m <= 1.0 for m in metrics)
    link = _logit if bounded else float
    gap = task["mother"] - task["father"]
    slope = (link(metrics[1]) - link(metrics[0])) / gap if abs(gap) >= 0.1 * task["scale"] \
        else -1.0
    if slope <= 0:
        if slope_per_scale is None:
            return None
        slope = slope_per_scale / task["scale"]
    return MetricLink(link(metrics[0]) - slope * task["father"], slope, bounded, "parents")


def gap_shares(task: dict, groups: tuple[str, ...], context: str) -> np.ndarray:
    """c_g: the swaps of the side that adds up closest to the parents' gap (`swap_side`),
    rescaled to add up to it."""
    side = swap_side(task, groups, context)
    effect = np.array([task["groups"][g][side] for g in groups])
    gap, total = task["mother"] - task["father"], float(effect.sum())
    factor = float(np.clip(gap / total, *RESCALE_LIMITS)) if gap * total > 0 else RESCALE_LIMITS[0]
    return effect * factor


def swap_side(task: dict, groups: tuple[str, ...], context: str) -> str:
    """`graft` or `revert`: the swaps whose sum comes closest to the parents' gap (the
    smaller rescaling, in ratio), the preferred parent's (`context`) on a tie. A skill that
    several groups each carry whole is redundant on one side: there each swap alone changes
    little, and the sum says nothing about where the skill lies."""
    gap = task["mother"] - task["father"]

    def misfit(side: str) -> float:
        total = sum(task["groups"][g][side] for g in groups)
        return abs(math.log(gap / total)) if gap * total > 0 else math.inf

    preferred = "revert" if context == "mother" else "graft"
    other = "graft" if preferred == "revert" else "revert"
    return other if misfit(other) < misfit(preferred) else preferred


def bend(task: dict, effect: np.ndarray) -> float:
    """KAPPA from the scan's midpoint (0 when the scan has none or nothing differs)."""
    spread = float(np.abs(effect).sum())
    if "midpoint" not in task or spread == 0:
        return 0.0
    chord = (task["father"] + task["mother"]) / 2
    return float(np.clip(4 * (task["midpoint"] - chord) / spread, *KAPPA_LIMITS))


def build_model(attribution: dict, weights: dict[str, float],
                parent_metrics: dict[str, dict[str, float]]) -> AttributionModel:
    """From scan.json's `attribution` and both parents' primary metrics per task
    (higher is better) on the search split."""
    groups = tuple(attribution["groups"])
    total = sum(weights.values())
    rows = {t: attribution["tasks"][t] for t in weights}
    metrics = {t: (parent_metrics["father"][t], parent_metrics["mother"][t]) for t in weights}
    links = {t: fitted_link(rows[t]) or parents_link(rows[t], metrics[t], None) for t in weights}
    per_scale = [link.slope * rows[t]["scale"] for t, link in links.items() if link is not None]
    fallback = float(np.median(per_scale)) if per_scale else DEFAULT_SLOPE_PER_SCALE
    tasks = []
    for task, weight in weights.items():
        row = rows[task]
        effect = gap_shares(row, groups, attribution["context"])
        link = links[task] or parents_link(row, metrics[task], fallback)
        tasks.append(TaskAttribution(task, weight / total, row["father"], row["mother"],
                                     effect, bend(row, effect), link))
    return AttributionModel(groups, tuple(tasks))


def mother_share(row: PlanRow) -> float:
    """How much of the mother a tensor of the plan takes (in expectation)."""
    if row.mode in (MergeMode.TRANSPLANT_FATHER, MergeMode.EXACT):
        return 0.0
    if row.mode == MergeMode.TRANSPLANT_MOTHER:
        return 1.0
    return row.final_ratio


@dataclass(frozen=True)
class GroupIndex:
    """Which group each tensor of the plan belongs to, and its weight (||M - F||^2)."""

    group: np.ndarray  # (tensors,) group number
    weight: np.ndarray  # (tensors,)
    count: int


def group_index(infos: list, model: AttributionModel, delta_sq: dict[str, float]) -> GroupIndex:
    number = {g: i for i, g in enumerate(model.groups)}
    return GroupIndex(np.array([number[group_of(info)] for info in infos]),
                      np.array([delta_sq.get(info.name, 0.0) for info in infos]),
                      len(model.groups))


def group_shares(rows: list[PlanRow], index: GroupIndex) -> tuple[np.ndarray, float]:
    """(mother share per group, overall mother share), both weighted by ||M - F||^2."""
    shares = np.array([mother_share(r) for r in rows])
    weighted = np.bincount(index.group, index.weight * shares, minlength=index.count)
    norm = np.bincount(index.group, index.weight, minlength=index.count)
    per_group = np.divide(weighted, norm, out=np.full(index.count, 0.5), where=norm > 0)
    overall = float(weighted.sum() / norm.sum()) if norm.sum() > 0 else 0.5
    return per_group, overall


def predicted_metric(task: TaskAttribution, shares: np.ndarray, overall: float) -> float:
    """The task's primary metric predicted for a child with these group shares."""
    gap = task.mother - task.father
    explained = float(task.effect.sum())
    score = (task.father + float(shares @ task.effect) + (gap - explained) * overall
             + task.kappa * float(np.abs(task.effect) @ (shares * (1.0 - shares))))
    return task.link.metric(score)


def predicted_fitness(rows: list[PlanRow], model: AttributionModel, index: GroupIndex) -> float:
    """The weighted primary metrics predicted for the child the rows describe."""
    shares, overall = group_shares(rows, index)
    return sum(t.weight * predicted_metric(t, shares, overall) for t in model.tasks)
