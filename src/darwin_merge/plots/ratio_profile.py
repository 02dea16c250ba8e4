"""ratio_profile.png: the mother's share the merge really used, layer by layer.

Drawn from the child's darwin_merge.json (the per-tensor rows the engine wrote), so
it shows the ratios of these very weights, scan and genome combined.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..arch.rules import MergeMode
from ..genome import TRANSPLANT_HIGH, TRANSPLANT_LOW

COMPONENT_ORDER = ("attn", "ffn", "moe", "norm", "per_layer_embed", "other")


def layer_profile(tensors: list[dict], key: str = "final_ratio") -> dict[str, list[tuple]]:
    """{component: [(layer, mean ratio), ...]} over the decoder-layer tensors."""
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in tensors:
        value = row.get(key)
        if row.get("layer") is None or value is None or row.get("mode") == MergeMode.EXACT:
            continue
        sums[row.get("component", "other")][int(row["layer"])].append(float(value))
    return {comp: sorted((layer, sum(v) / len(v)) for layer, v in by_layer.items())
            for comp, by_layer in sums.items()}


def plot_ratio_profile(tensors: list[dict], out: Path, low: float = TRANSPLANT_LOW,
                       high: float = TRANSPLANT_HIGH, title: str = "Ratio profile") -> Path | None:
    """Write the picture; None when no decoder-layer tensor has a ratio (nothing to draw)."""
    profile = layer_profile(tensors)
    if not profile:
        return None
    scan = layer_profile(tensors, "mri_ratio")
    fig = Figure(figsize=(9, 3.8))
    ax = fig.subplots()
    ax.axhspan(0, low, color="#dbe9f6", label=f"transplant father (< {low:g})")
    ax.axhspan(high, 1, color="#f9e0d6", label=f"transplant mother (> {high:g})")
    names = sorted(profile, key=lambda c: (c not in COMPONENT_ORDER,
                                           COMPONENT_ORDER.index(c) if c in COMPONENT_ORDER
                                           else 0, c))
    for comp in names:
        layers, values = zip(*profile[comp], strict=True)
        ax.plot(layers, values, marker="o", ms=3, lw=1.4, label=f"{comp} (final)")
    if scan:
        merged = sorted({(layer, v) for rows in scan.values() for layer, v in rows})
        layers, values = zip(*merged, strict=True)
        ax.scatter(layers, values, s=8, color="grey", alpha=0.6, label="scan (mri_ratio)")
    ax.set(xlabel="decoder layer", ylabel="mother's share", ylim=(0, 1), title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out
