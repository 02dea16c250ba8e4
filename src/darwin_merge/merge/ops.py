"""Pure tensor arithmetic of the merge: DARE, TIES, linear, blend, clip (merge/execute.py
runs them).

Every function takes tensors and numbers and returns a new tensor (`all_finite`: a
verdict); none modifies its inputs or keeps state. `r` is always the mother's share
(0 = father, 1 = mother). Random draws come from a caller-provided CPU
`torch.Generator`, so the caller decides the seed and the result does not depend on the
device.
"""

from __future__ import annotations

import torch

from ..arch.rules import MergeMode


def all_finite(tensor: torch.Tensor, allow_inf: bool = False) -> bool:
    """No NaN and, unless `allow_inf` (clipping bounds, where Inf means "no bound"), no
    +-Inf: one reduction (min and max propagate NaN), about 20x cheaper on CPU than
    `isfinite(t).all()` and no tensor-sized mask. Every check of the merges, the scan and
    the health check is this one."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor.detach())
    if allow_inf:
        return not bool(torch.isnan(low) | torch.isnan(high))
    return bool(torch.isfinite(low) & torch.isfinite(high))


def dare(delta: torch.Tensor, density: float, generator: torch.Generator | None,
         rescale: bool = True) -> torch.Tensor:
    """Drop And REscale: keep each entry with probability `density`, scale kept by 1/density.

    The mask is drawn on the CPU with `generator` (then moved to `delta`'s device), so
    the same seed drops the same entries on every device. density 1 keeps all (no
    draw); density 0 drops all; an all-zero delta (a tensor the fine-tune left as it
    was) stays zero, with no draw (each tensor's generator is its own).
    E[dare(d)] = d for any density in (0, 1]. `rescale` False keeps the kept entries as
    they are (a mergekit option; the drop alone).
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    if density >= 1.0:
        return delta.clone()
    if density <= 0.0 or not bool(delta.any()):
        return torch.zeros_like(delta)
    keep = dare_mask(delta.shape, density, generator).to(delta.device)
    return torch.where(keep, delta / density if rescale else delta, torch.zeros_like(delta))


def magnitude_trim(delta: torch.Tensor, density: float, rescale: bool = False) -> torch.Tensor:
    """TIES's trim: keep the int(density * numel) entries of largest magnitude, zero the rest.

    Ties in magnitude are broken by position (a stable sort), so the result is
    deterministic. `rescale` divides the kept entries by `density`. density 1 keeps all.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    if density >= 1.0:
        return delta.clone()
    keep_count = int(density * delta.numel())
    order = torch.sort(delta.abs().flatten(), descending=True, stable=True).indices
    keep = torch.zeros(delta.numel(), dtype=torch.bool, device=delta.device)
    keep[order[:keep_count]] = True
    kept = torch.where(keep.view(delta.shape), delta, torch.zeros_like(delta))
    return kept / density if rescale and keep_count else kept


def magnitude_trim_fast(delta: torch.Tensor, density: float, rescale: bool = False
                        ) -> torch.Tensor:
    """magnitude_trim with a selection instead of a sort (what the merges run): the same
    entries kept, ties at the threshold broken by position as the stable sort does.

    The int(density * numel)-th largest magnitude is found with `kthvalue` (linear time);
    every entry above it is kept, and of those equal to it the first ones by position, as
    many as are still needed. Six times faster on SmolLM2's embedding (a test checks that
    both agree, ties included). When the threshold is 0 the entries equal to it are zeros,
    kept or not: an all-zero delta returns at once, and no tie is broken.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    if density >= 1.0:
        return delta.clone()
    keep_count = int(density * delta.numel())
    if keep_count == 0:
        return torch.zeros_like(delta)
    magnitude = delta.abs().flatten()
    if not bool(magnitude.any()):
        return torch.zeros_like(delta)
    threshold = kth_largest(magnitude, keep_count)
    keep = magnitude > threshold
    missing = keep_count - int(keep.sum())
    if bool(threshold > 0):
        keep[torch.nonzero(magnitude == threshold).flatten()[:missing]] = True
    kept = torch.where(keep.view(delta.shape), delta, torch.zeros_like(delta))
    return kept / density if rescale else kept


# kth_largest: under this many values one `kthvalue` is as fast as narrowing it down first;
# the sample that narrows it down has about this many values.
SELECT_WHOLE_BELOW, SAMPLE_SIZE = 1 << 16, 4096


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest of a 1-D tensor (1 <= k <= numel), exactly `kthvalue`'s value.

    `kthvalue` over a large tensor is the costly part of a magnitude trim. A sample of every
    so-many-th value brackets where the k-th largest should lie (8 standard deviations of a
    sample quantile either side); the values above the bracket are counted, and the k-th
    largest is picked from the few inside it. When the bracket misses (a sample unlike the
    whole), the whole tensor is ranked as before: the value is the same either way.
    """
    n = values.numel()
    if n < SELECT_WHOLE_BELOW:
        return torch.kthvalue(values, n - k + 1).values
    stride = n // SAMPLE_SIZE | 1  # odd: less likely to line up with a row length
    sample = torch.sort(values[stride // 2::stride]).values
    m = sample.numel()
    at = (n - k) / n * (m - 1)  # where the k-th largest falls in the sorted sample
    margin = 8.0 * (m * (k / n) * (1 - k / n)) ** 0.5 + 2.0
    low = sample[max(int(at - margin), 0)] if at - margin >= 0 else values.min()
    high = sample[min(int(at + margin) + 1, m - 1)] if at + margin < m - 1 else values.max()
    above = int((values > high).sum())
    band = values[(values >= low) & (values <= high)]
    if above >= k or above + band.numel() < k:
        return torch.kthvalue(values, n - k + 1).values
    return torch.kthvalue(band, band.numel() - (k - above) + 1).values


def weighted_sum(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """sum_i w_i t_i (task arithmetic's sum of task vectors, an N-model linear merge)."""
    total = torch.zeros_like(tensors[0])
    for tensor, weight in zip(tensors, weights, strict=True):
        total.add_(tensor, alpha=weight)
    return total


def dare_mask(shape: torch.Size | tuple[int, ...], density: float,
              generator: torch.Generator | None) -> torch.Tensor:
    """The Bernoulli(density) keep mask, drawn on the CPU (uniform float32 < density)."""
    return torch.rand(shape, generator=generator, dtype=torch.float32) < density


def ties_elect(weighted: list[torch.Tensor], tie_sign: float = 0.0) -> torch.Tensor:
    """TIES sign election: the sign (+1, 0, -1) of the sum of the weighted task vectors.

    A sum of exactly zero (a tie, or all-zero entries) elects `tie_sign`: 0 in darwin's own
    merges (nothing agrees with it), +1 in mergekit's (`sum >= 0` elects +), which the
    mergekit path follows (docs/MERGE.md, "mergekit interop"). An all-zero entry keeps
    nothing either way.
    """
    total = torch.stack(weighted).sum(dim=0)
    elected = torch.sign(total)
    return elected if tie_sign == 0.0 else torch.where(total == 0, tie_sign, elected)


def ties_merge(deltas: list[torch.Tensor], weights: list[float],
               disjoint_mean: bool = False, tie_sign: float = 0.0) -> torch.Tensor:
    """Weighted TIES merge of task vectors (DESIGN.md section 2, steps 2-3).

    Each delta is weighted, the sign is elected on the weighted sum, and only entries
    whose sign agrees with the elected one are kept (zero agrees with nothing). The
    result is the weighted sum of the kept entries; with `disjoint_mean`, that sum is
    divided by the total weight of the kept entries (TIES's disjoint mean), so an
    entry kept from one parent alone gets that parent's full delta. `tie_sign`: what a
    zero sum elects (`ties_elect`).
    """
    weighted = [d * w for d, w in zip(deltas, weights, strict=True)]
    elected = ties_elect(weighted, tie_sign)
    kept = [(torch.sign(wd) == elected) & (elected != 0) for wd in weighted]
    total = sum(torch.where(k, wd, torch.zeros_like(wd)) for k, wd in zip(kept, weighted,
                                                                            strict=True))
    if not disjoint_mean:
        return total
    mass = sum(k.to(total.dtype) * w for k, w in zip(kept, weights, strict=True))
    return torch.where(mass > 0, total / mass.clamp_min(torch.finfo(total.dtype).tiny),
                       torch.zeros_like(total))


def linear(father: torch.Tensor, mother: torch.Tensor, ratio: float) -> torch.Tensor:
    """Plain interpolation (1 - r) A + r B (as A + r (B - A), one pass with torch.lerp)."""
    return torch.lerp(father, mother, ratio)


def dare_ties(father: torch.Tensor, mother: torch.Tensor, base: torch.Tensor | None,
              ratio: float, density_a: float, density_b: float,
              generators: tuple[torch.Generator | None, torch.Generator | None],
              disjoint_mean: bool = False) -> torch.Tensor:
    """DARE on each parent's task vector, then weighted TIES; without a base, base = father.

    With base = father the father's task vector is zero, and this reduces to
    A + r * DARE(B - A, density_b).
    """
    anchor = father if base is None else base
    delta_a = dare(father - anchor, density_a, generators[0])
    delta_b = dare(mother - anchor, density_b, generators[1])
    return anchor + ties_merge([delta_a, delta_b], [1.0 - ratio, ratio], disjoint_mean)


def blend(dare_ties_child: torch.Tensor, linear_child: torch.Tensor,
          method_weight: float) -> torch.Tensor:
    """merge_method_weight w: w * DARE-TIES + (1 - w) * linear."""
    if method_weight >= 1.0:
        return dare_ties_child
    if method_weight <= 0.0:
        return linear_child
    return dare_ties_child * method_weight + linear_child * (1.0 - method_weight)


def clip_bound(father: torch.Tensor, mother: torch.Tensor, kind: str) -> torch.Tensor:
    """Clipping buffers: the looser bound (min of minima, max of maxima).

    Interpolating two clip ranges could cut off activations that either parent lets
    through; the union of both ranges clips nothing that a parent would keep.
    """
    if kind == MergeMode.CLIP_MIN:
        return torch.minimum(father, mother)
    if kind == MergeMode.CLIP_MAX:
        return torch.maximum(father, mother)
    raise ValueError(f"not a clip kind: {kind!r}")


# -- the fused form the engine runs ---------------------------------------------------
def merge_pair(father: torch.Tensor, mother: torch.Tensor, base: torch.Tensor | None,
               ratio: float, density_a: float, density_b: float, method_weight: float,
               generators: tuple[torch.Generator | None, torch.Generator | None],
               disjoint_mean: bool = False) -> torch.Tensor:
    """blend(dare_ties(...), linear(...), method_weight), fused to a few passes over memory.

    Same masks and the same arithmetic as the reference functions above, regrouped so a
    large tensor is traversed a handful of times instead of twenty (tests check that
    both agree to float rounding). Inputs are not modified.
    """
    if method_weight <= 0.0:
        return linear(father, mother, ratio)
    if base is None:
        return _merge_without_base(father, mother, ratio, density_b, method_weight,
                                   generators[1], disjoint_mean)
    merged = _merge_with_base(father, mother, base, ratio, density_a, density_b, generators,
                              disjoint_mean)
    if method_weight >= 1.0:
        return merged
    return torch.lerp(linear(father, mother, ratio), merged, method_weight)


def _merge_without_base(father, mother, ratio, density, method_weight, generator,
                        disjoint_mean):
    """Base = father: d_A = 0, so TIES keeps every kept, non-zero entry of d = B - A.

    DARE-TIES gives A + c * keep * d with c = r / density (1 / density with the
    disjoint mean: a lone entry gets its full delta); blended with the linear
    A + r d by w, the child is A + d * (w c keep + (1 - w) r): one torch.lerp.
    """
    scale = (1.0 if disjoint_mean else ratio) / max(density, 1e-30)
    dropped = (1 - method_weight) * ratio
    if density >= 1.0:
        return torch.lerp(father, mother, method_weight * scale + dropped)
    if density <= 0.0:
        return torch.lerp(father, mother, dropped)
    keep = dare_mask(father.shape, density, generator).to(father.device)
    factor = torch.where(keep, torch.tensor(method_weight * scale + dropped, dtype=father.dtype),
                         torch.tensor(dropped, dtype=father.dtype)).to(father.device)
    return torch.lerp(father, mother, factor)


def _kept(delta: torch.Tensor, density: float, generator: torch.Generator | None
          ) -> torch.Tensor:
    """dare() computed in place on a delta the caller owns (same mask, same values)."""
    if density >= 1.0:
        return delta
    if density <= 0.0:
        return delta.zero_()
    keep = dare_mask(delta.shape, density, generator).to(delta.device)
    return delta.mul_(keep).mul_(1.0 / density)


def _merge_with_base(father, mother, base, ratio, density_a, density_b, generators,
                     disjoint_mean):
    if (father is base or mother is base) and not disjoint_mean and 0.0 <= ratio <= 1.0:
        return _merge_one_task_vector(father, mother, base, ratio, density_a, density_b,
                                      generators)
    weighted_a = _kept(father - base, density_a, generators[0]).mul_(1.0 - ratio)
    weighted_b = _kept(mother - base, density_b, generators[1]).mul_(ratio)
    elected = torch.sign(weighted_a + weighted_b)
    keep_a = torch.sign(weighted_a).mul_(elected) > 0
    keep_b = torch.sign(weighted_b).mul_(elected) > 0
    merged = weighted_a.mul_(keep_a).add_(weighted_b.mul_(keep_b))
    if disjoint_mean:
        mass = keep_a.to(merged.dtype).mul_(1.0 - ratio).add_(keep_b.to(merged.dtype), alpha=ratio)
        merged = torch.where(mass > 0, merged / mass.clamp_min(torch.finfo(mass.dtype).tiny),
                             torch.zeros_like(merged))
    return merged.add_(base)


def dare_owned(delta: torch.Tensor, density: float, generator: torch.Generator | None,
               rescale: bool = True) -> torch.Tensor:
    """dare() in place on a delta the caller owns: the same mask and the same values (a
    dropped entry may be -0.0 where dare() gives +0.0), without dare()'s copies."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    if density >= 1.0:
        return delta
    if density <= 0.0 or not bool(delta.any()):
        return delta.zero_()
    keep = dare_mask(delta.shape, density, generator).to(delta.device)
    if rescale:
        delta.div_(density)
    return delta.mul_(keep)


def ties_merge_pair(delta_a: torch.Tensor, delta_b: torch.Tensor, weights: tuple[float, float],
                    disjoint_mean: bool = False, tie_sign: float = 0.0) -> torch.Tensor:
    """ties_merge([delta_a, delta_b], weights, disjoint_mean, tie_sign) in a few passes, in
    place over the two deltas the caller owns (both are overwritten): the same values
    (tests/test_merge_ops.py), without the stacked copy, the per-model masks' `where`s and
    the zero tensors. Where both entries are dropped the mass is 0 and the sum a zero, so
    dividing by the clamped mass leaves it zero without a `where`."""
    weighted_a, weighted_b = delta_a.mul_(weights[0]), delta_b.mul_(weights[1])
    total = weighted_a + weighted_b
    elected = torch.sign(total)
    if tie_sign != 0.0:
        elected.masked_fill_(total == 0, tie_sign)
    keep_a = torch.sign(weighted_a).mul_(elected) > 0
    keep_b = torch.sign(weighted_b).mul_(elected) > 0
    merged = weighted_a.mul_(keep_a).add_(weighted_b.mul_(keep_b))
    if not disjoint_mean:
        return merged
    mass = keep_a.to(merged.dtype).mul_(weights[0]).add_(keep_b.to(merged.dtype),
                                                         alpha=weights[1])
    return merged.div_(mass.clamp_min_(torch.finfo(mass.dtype).tiny))


def _merge_one_task_vector(father, mother, base, ratio, density_a, density_b, generators):
    """_merge_with_base when one parent's tensor *is* the base's (`ParentTensors` shares a
    tensor a fine-tune left as it was): its task vector is zero, so the other one's kept
    entries all win the sign election and nothing else does. The same numbers to the bit,
    without the zero task vector's draw and the election's four passes; `+ 0.0` turns the
    dropped entries' -0.0 into the +0.0 the election gives."""
    if father is base and mother is base:
        return base.clone()
    if father is base:
        weighted = _kept(mother - base, density_b, generators[1]).mul_(ratio)
    else:
        weighted = _kept(father - base, density_a, generators[0]).mul_(1.0 - ratio)
    return weighted.add_(0.0).add_(base)
