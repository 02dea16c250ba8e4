"""Static profile of every tensor: histogram entropy, standard deviation, L2 norm.

The pass streams a `ModelSource` one tensor at a time, so it never holds a model.
`std` and `norm` use every value. The entropy histogram of a tensor with more than
`max_elements` values is built from a sample of that many values drawn with a
fixed-seed generator (with replacement), so a 250k x 2k embedding costs no more
than a small matrix and the result is still deterministic; `sampling_info` says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection

import torch

from ..errors import NumericalError
from ..io import ModelSource
from ..merge.ops import all_finite

DEFAULT_BINS = 256
DEFAULT_MAX_ELEMENTS = 1 << 22  # 4,194,304 values per histogram


def static_score(entropy: float, std: float, norm: float) -> float:
    """The source's formula: entropy*0.3 + std*0.2 + min(norm, 100)*0.002."""
    return entropy * 0.3 + std * 0.2 + min(norm, 100.0) * 0.002


def histogram_entropy(values: torch.Tensor, bins: int = DEFAULT_BINS) -> float:
    """Shannon entropy (bits) of a `bins`-bin histogram over the values' own min..max.

    A constant tensor has one occupied bin, hence 0 bits; evenly spread values reach
    log2(bins) bits.
    """
    flat = values.reshape(-1).to(torch.float64)
    if flat.numel() == 0:
        return 0.0
    low, high = flat.min().item(), flat.max().item()
    if not high > low:
        return 0.0
    counts = torch.histc(flat, bins=bins, min=low, max=high)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * torch.log2(p)).sum().item())


def _histogram_sample(flat: torch.Tensor, max_elements: int, seed: int) -> torch.Tensor:
    if flat.numel() <= max_elements:
        return flat
    gen = torch.Generator().manual_seed(seed)
    index = torch.randint(0, flat.numel(), (max_elements,), generator=gen)
    return flat[index]


def _chunks(flat: torch.Tensor, size: int = 1 << 24):
    """float64 views of a flat tensor, a bounded number of values at a time."""
    for start in range(0, flat.numel(), size):
        yield flat[start:start + size].to(torch.float64)


def _moments(flat: torch.Tensor) -> tuple[float, float]:
    """(population std, L2 norm) in float64, one chunk at a time (bounded memory).

    Chunks are combined with Chan et al.'s pairwise update of (count, mean, M2), which
    stays accurate when the mean is large compared with the spread.
    """
    count, mean, m2, squares = 0, 0.0, 0.0, 0.0
    for chunk in _chunks(flat):
        var_c, mean_c = torch.var_mean(chunk, correction=0)
        n_c, mean_c = chunk.numel(), mean_c.item()
        delta = mean_c - mean
        total = count + n_c
        m2 += var_c.item() * n_c + delta * delta * count * n_c / total
        mean += delta * n_c / total
        count = total
        squares += chunk.square().sum().item()
    return math.sqrt(max(m2, 0.0) / count), math.sqrt(squares)


def tensor_stats(tensor: torch.Tensor, bins: int = DEFAULT_BINS,
                 max_elements: int = DEFAULT_MAX_ELEMENTS, seed: int = 0,
                 name: str = "tensor", allow_inf: bool = False) -> dict:
    """Entropy, std, norm and static_score of one tensor (input untouched).

    `std` is the population standard deviation (no Bessel correction), so a single
    value has std 0. NaN raises `NumericalError`: a histogram of it means nothing, and
    a parent holding one should not be merged. So does Inf, except where `allow_inf`
    (clipping bounds, where +-Inf means "no clipping"): there the stats cover the
    finite values and `infinite` counts the others.
    """
    flat = tensor.detach().reshape(-1).cpu()
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    infinite = 0
    if not all_finite(flat):  # one cheap reduction; the mask only when something is off
        if torch.isnan(flat).any() or not allow_inf:
            raise NumericalError(f"{name}: contains NaN or Inf values; cannot profile it")
        finite = torch.isfinite(flat)
        infinite = int((~finite).sum().item())
        flat = flat[finite]
    if flat.numel() == 0:
        return {"entropy": 0.0, "std": 0.0, "norm": 0.0, "static": 0.0, "sampled": False,
                "infinite": infinite}
    sampled = flat.numel() > max_elements
    entropy = histogram_entropy(_histogram_sample(flat, max_elements, seed), bins)
    std, norm = _moments(flat)
    return {
        "entropy": entropy, "std": std, "norm": norm,
        "static": static_score(entropy, std, norm), "sampled": sampled, "infinite": infinite,
    }


def scan_static(source: ModelSource, bins: int = DEFAULT_BINS,
                max_elements: int = DEFAULT_MAX_ELEMENTS, seed: int = 0,
                allow_inf: Collection[str] = (),
                on_tensor: Callable[[str], None] | None = None) -> dict[str, dict]:
    """`tensor_stats` of every tensor of a model folder, read one at a time.

    `allow_inf` names the tensors (clipping bounds) in which +-Inf is legitimate.
    """
    stats = {}
    for name in source.names:
        stats[name] = tensor_stats(source.get(name), bins, max_elements, seed, name=name,
                                   allow_inf=name in allow_inf)
        if on_tensor is not None:
            on_tensor(name)
    return stats


def sampling_info(bins: int, max_elements: int, seed: int, sampled: list[str]) -> dict:
    """What scan.json records about how the histograms were built."""
    return {
        "bins": bins, "max_elements": max_elements, "seed": seed,
        "method": "histogram of a uniform sample with replacement (torch.Generator, seed) "
                  "for tensors larger than max_elements; std and norm use every value",
        "sampled_tensors": sorted(sampled),
        "max_entropy_bits": math.log2(bins),
    }
