"""Pure tensor arithmetic of the merge: DARE, TIES, linear, blend, transplant, clip.

Every function takes tensors and numbers and returns a new tensor; none modifies
its inputs or keeps state. `r` is always the mother's share (0 = father, 1 = mother).
Random draws come from a caller-provided CPU `torch.Generator`, so the caller
decides the seed and the result does not depend on the device.
"""

from __future__ import annotations

import torch


def dare(delta: torch.Tensor, density: float, generator: torch.Generator | None) -> torch.Tensor:
    """Drop And REscale: keep each entry with probability `density`, scale kept by 1/density.

    The mask is drawn on the CPU with `generator` (then moved to `delta`'s device), so
    the same seed drops the same entries on every device. density 1 keeps all (no
    draw); density 0 drops all. E[dare(d)] = d for any density in (0, 1].
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    if density >= 1.0:
        return delta.clone()
    if density <= 0.0:
        return torch.zeros_like(delta)
    keep = torch.rand(delta.shape, generator=generator, dtype=torch.float32) < density
    return torch.where(keep.to(delta.device), delta / density, torch.zeros_like(delta))


def ties_elect(weighted: list[torch.Tensor]) -> torch.Tensor:
    """TIES sign election: the sign (+1, 0, -1) of the sum of the weighted task vectors.

    A sum of exactly zero (a tie, or all-zero entries) elects 0, which nothing agrees with.
    """
    return torch.sign(torch.stack(weighted).sum(dim=0))


def ties_merge(deltas: list[torch.Tensor], weights: list[float],
               disjoint_mean: bool = False) -> torch.Tensor:
    """Weighted TIES merge of task vectors (DESIGN.md section 2, steps 2-3).

    Each delta is weighted, the sign is elected on the weighted sum, and only entries
    whose sign agrees with the elected one are kept (zero agrees with nothing). The
    result is the weighted sum of the kept entries; with `disjoint_mean`, that sum is
    divided by the total weight of the kept entries (TIES's disjoint mean), so an
    entry kept from one parent alone gets that parent's full delta.
    """
    weighted = [d * w for d, w in zip(deltas, weights, strict=True)]
    elected = ties_elect(weighted)
    kept = [(torch.sign(wd) == elected) & (elected != 0) for wd in weighted]
    total = sum(torch.where(k, wd, torch.zeros_like(wd)) for k, wd in zip(kept, weighted,
                                                                            strict=True))
    if not disjoint_mean:
        return total
    mass = sum(k.to(total.dtype) * w for k, w in zip(kept, weights, strict=True))
    return torch.where(mass > 0, total / mass.clamp_min(torch.finfo(total.dtype).tiny),
                       torch.zeros_like(total))


def linear(father: torch.Tensor, mother: torch.Tensor, ratio: float) -> torch.Tensor:
    """Plain interpolation (1 - r) A + r B."""
    return father * (1.0 - ratio) + mother * ratio


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


def transplant_mode(ratio: float, low: float, high: float) -> str | None:
    """`transplant_father` below `low`, `transplant_mother` above `high`, else None."""
    if ratio < low:
        return "transplant_father"
    if ratio > high:
        return "transplant_mother"
    return None


def transplant(father: torch.Tensor, mother: torch.Tensor, mode: str) -> torch.Tensor:
    """One parent's tensor, bit for bit (same dtype, no arithmetic)."""
    if mode == "transplant_father":
        return father
    if mode == "transplant_mother":
        return mother
    raise ValueError(f"not a transplant mode: {mode!r}")


def clip_bound(father: torch.Tensor, mother: torch.Tensor, kind: str) -> torch.Tensor:
    """Clipping buffers: the looser bound (min of minima, max of maxima).

    Interpolating two clip ranges could cut off activations that either parent lets
    through; the union of both ranges clips nothing that a parent would keep.
    """
    if kind == "clip_min":
        return torch.minimum(father, mother)
    if kind == "clip_max":
        return torch.maximum(father, mother)
    raise ValueError(f"not a clip kind: {kind!r}")
