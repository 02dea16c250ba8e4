"""mri_ratio.png: the scan's prescribed mother share per decoder layer and component."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def plot_mri_ratio(tensors: dict[str, dict], path: Path, low: float, high: float) -> None:
    """Mean prescribed mother share per decoder layer, one line per component."""
    per_component: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    outside = []
    for name, entry in tensors.items():
        if entry["layer"] is None:
            outside.append((name, entry["mri_ratio"]))
        else:
            per_component[entry["component"]][entry["layer"]].append(entry["mri_ratio"])
    fig = Figure(figsize=(10, 4.5), constrained_layout=True)
    ax = fig.subplots()
    for component in sorted(per_component):
        layers = sorted(per_component[component])
        means = [float(np.mean(per_component[component][layer])) for layer in layers]
        ax.plot(layers, means, marker="o", markersize=3, label=component)
    ax.axhspan(0.0, low, color="tab:blue", alpha=0.08, label=f"father transplant (< {low})")
    ax.axhspan(high, 1.0, color="tab:red", alpha=0.08, label=f"mother transplant (> {high})")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("decoder layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mri_ratio (mother share)")
    title = "MRI ratio per layer and component"
    if outside:
        title += f"; outside the layers: {len(outside)} tensors, mean " \
                 f"{np.mean([r for _, r in outside]):.3f}"
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    fig.savefig(path, dpi=110)
