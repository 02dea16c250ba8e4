"""mds_father_mother.png: the parents' layer-by-probe heatmaps (the scan's layer importance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _matrix(rows: list[dict]) -> tuple[np.ndarray, list[str]]:
    names = list(rows[0]["distances"])
    return np.array([[row["distances"][n] for n in names] for row in rows]), names


def plot_mds(layers: dict, path: Path, labels: tuple[str, str] = ("Father", "Mother")) -> None:
    """Two heatmaps (layers x probes), father left, mother right, one shared colour scale."""
    father, names = _matrix(layers["father"])
    mother, _ = _matrix(layers["mother"])
    vmax = max(float(father.max()), float(mother.max()), 1e-12)
    height = max(4.0, 0.22 * father.shape[0] + 1.5)
    fig = Figure(figsize=(10, height), constrained_layout=True)
    axes = fig.subplots(1, 2, sharey=True)
    image = None
    for ax, matrix, label in zip(axes, (father, mother), labels, strict=True):
        image = ax.imshow(matrix, aspect="auto", cmap="magma", vmin=0.0, vmax=vmax,
                          origin="lower", interpolation="nearest")
        ax.set_title(f"{label}: layer importance (skip distance)")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_xlabel("probe")
    axes[0].set_ylabel("decoder layer")
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(image, ax=axes, label="1 - cos(h_full, h_skip)", shrink=0.8)
    fig.savefig(path, dpi=110)
