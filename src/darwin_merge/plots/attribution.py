"""attribution.png: where each skill lives, tensor groups x tasks (the scan's attribution)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


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
