"""The scan's pictures: the parents' layer-by-probe heatmaps, and the MRI ratio per layer."""

from __future__ import annotations

from collections import defaultdict
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


def attribution_matrices(attribution: dict) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """(groups, tasks, {"graft": [group][task], "revert": ...}) in each task's own units."""
    tasks = list(attribution["tasks"])
    groups = list(attribution["groups"])
    matrices = {}
    for side in ("graft", "revert"):
        matrices[side] = np.array([[attribution["tasks"][t]["groups"][g][side]
                                    / attribution["tasks"][t]["scale"] for t in tasks]
                                   for g in groups])
    return groups, tasks, matrices


def plot_attribution(attribution: dict, path: Path) -> None:
    """Where each skill lives: groups x tasks, the mother's group grafted into the father
    (left) and the father's group put back into the mother (right), one diverging scale."""
    groups, tasks, matrices = attribution_matrices(attribution)
    vmax = max(float(np.abs(m).max()) for m in matrices.values()) or 1e-12
    fig = Figure(figsize=(4.0 + 1.1 * len(tasks), max(4.0, 0.24 * len(groups) + 2.0)),
                 constrained_layout=True)
    axes = fig.subplots(1, 2, sharey=True)
    titles = {"graft": "father + mother's group\n(gain over the father)",
              "revert": "mother - father's group\n(what the mother's group is worth)"}
    image = None
    for ax, side in zip(axes, ("graft", "revert"), strict=True):
        image = ax.imshow(matrices[side], aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                          interpolation="nearest")
        ax.set_title(titles[side], fontsize=9)
        labels = [f"{t}{' *' if attribution['tasks'][t]['role'] == 'fitness' else ''}"
                  for t in tasks]
        ax.set_xticks(range(len(tasks)), labels, rotation=35, ha="right", fontsize=8)
    axes[0].set_yticks(range(len(groups)), groups, fontsize=7)
    axes[0].set_ylabel("tensor group")
    fig.colorbar(image, ax=axes, shrink=0.8,
                 label="change of the task score (item SDs); red: the mother's group helps")
    fig.suptitle("Skill attribution (* = fitness task)", fontsize=10)
    fig.savefig(path, dpi=110)
