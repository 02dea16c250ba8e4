"""One description of a merge, whatever wrote the recipe: a step per tensor over named models.

A genome's plan (merge/plan.py: `spec_of_plan`), a mergekit YAML (mergekit/run.py:
`spec_of_config`) and the standard recipes the search is measured against
(mergekit/standard.py) all compile to a `MergeSpec`; one executor (merge/execute.py) runs
it, to disk or in memory, with one set of checks, one dtype rule and one way of seeding
DARE's masks. A step says, for one tensor, how the child's tensor is made from the
models' tensors of that name:

* `exact`: a non-float tensor every model must share (copied);
* `take`: one model's tensor as it is (darwin's transplants);
* `clip_min` / `clip_max`: the looser bound of all models (clipping buffers);
* `interpolate`: the weighted sum of the models, divided by the total weight when
  `mean` (linear);
* `task_vectors`: `base + scale * combine(trim(model - base))`: each model's task vector
  trimmed to its density (`dare`: a seeded random drop; `magnitude`: TIES's largest
  entries; rescaled by 1 / density when `rescale`), then summed with the weights, after a
  sign election when `sign_election` (an entry is kept where its sign agrees with the sign
  of the weighted sum; `tie_sign` is what a zero sum elects), divided by the weight mass of
  the kept entries when `mean`. A contribution's `keep_largest` below 1 first keeps that
  fraction of its task vector's largest magnitudes, unscaled (TIES's trim before a DARE
  drop: genome rule v3). Without a base the first contribution's model is the base
  (its own task vector is zero). `linear_blend` w gives `(1 - w) * that + w * the models'
  weighted mean`: darwin's `merge_method_weight` is 1 - w.

Models are named in the spec (`father`, `mother`, `base` for a genome; a YAML's model
references for mergekit), so N models are as easy to say as two.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

import torch

from ..arch.rules import MergeMode

# mergekit's sign election elects + where the weighted task vectors sum to exactly 0
# (`sum >= 0`); darwin's v1 and v2 genomes elect 0 there (merge/ops.py, ties_elect), its v3
# genomes + (so that a v3 genome's TIES is mergekit's, to the bit)
MERGEKIT_TIE_SIGN = 1.0


class StepKind(str, Enum):
    EXACT = MergeMode.EXACT.value
    TAKE = "take"
    CLIP_MIN = MergeMode.CLIP_MIN.value
    CLIP_MAX = MergeMode.CLIP_MAX.value
    INTERPOLATE = "interpolate"
    TASK_VECTORS = "task_vectors"

    def __str__(self) -> str:
        return self.value


class Trim(str, Enum):
    NONE = "none"
    DARE = "dare"  # a random drop, seeded by (the spec's seed, tensor, model)
    MAGNITUDE = "magnitude"  # TIES: keep the largest magnitudes (needs the whole tensor)


@dataclass(frozen=True)
class Contribution:
    """One model's part in a step: its weight, and for task vectors the density its task
    vector is trimmed to and how."""

    model: str
    weight: float = 1.0
    density: float = 1.0
    trim: Trim = Trim.NONE
    keep_largest: float = 1.0  # a magnitude trim before `trim` (never rescaled)


@dataclass(frozen=True)
class TensorStep:
    """How the child's tensor `name` is made (see the module's docstring)."""

    name: str
    kind: StepKind
    shape: tuple[int, ...] = ()
    contributions: tuple[Contribution, ...] = ()
    base: str | None = None
    sign_election: bool = False
    tie_sign: float = 0.0
    mean: bool = False
    rescale: bool = True
    scale: float = 1.0
    task_vector_share: float = 1.0
    # a clipping bound (Inf means "no bound"): an Inf in the models or the child is allowed
    bounds: bool = False

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(c.model for c in self.contributions)

    @property
    def weights(self) -> list[float]:
        return [c.weight for c in self.contributions]

    @property
    def is_pair(self) -> bool:
        """Darwin's two-parent DARE-TIES (a genome's plan row): weights summing to 1, DARE
        trims, sign election electing 0 on a tie, no scale. The executor runs it with the
        fused kernel (ops.merge_pair), the same numbers as the reference form to float
        rounding (tests/test_merge_spec.py), chunk by chunk."""
        return (self.kind is StepKind.TASK_VECTORS and len(self.contributions) == 2
                and self.sign_election and self.tie_sign == 0.0 and self.scale == 1.0
                and self.rescale and abs(sum(self.weights) - 1.0) < 1e-12
                and all(c.trim in (Trim.DARE, Trim.NONE) and c.keep_largest >= 1.0
                        for c in self.contributions)
                and self.base not in self.models)

    @property
    def elementwise(self) -> bool:
        """Whether a chunk of the tensor can be merged alone (streamed chunk by chunk):
        everything but a task-vector merge in the reference form (a magnitude trim ranks
        the whole tensor; DARE there draws one mask per whole tensor)."""
        return self.kind is not StepKind.TASK_VECTORS or self.is_pair


# The seed of DARE's masks shared by every genome of rule v3 and by the search's standard
# recipes (mergekit/standard.py): a tensor's mask is `rand < density` from one draw per
# (tensor, model), so the masks of two densities are nested and equal densities drop the
# same entries whatever else differs. Common random numbers: the search compares recipes,
# not draws, and a v3 genome of a tuned DARE-TIES point drops what the tuning dropped.
SHARED_DARE_SEED = "darwin-shared-dare"


@dataclass(frozen=True)
class MergeSpec:
    """A whole merge: the models read for every tensor (each checked for NaN and Inf), the
    reference model (whose dtype a tensor keeps unless the child's is given; an `exact`
    tensor is the reference's), the arithmetic's dtype, the seed of DARE's masks, and one
    step per tensor of the child, in order."""

    models: tuple[str, ...]
    reference: str
    steps: tuple[TensorStep, ...]
    seed: str
    compute_dtype: torch.dtype = torch.float32
    # how error messages name a model ("the father"); default: its name
    labels: Mapping[str, str] = field(default_factory=dict)

    def label(self, model: str) -> str:
        return self.labels.get(model, model)
