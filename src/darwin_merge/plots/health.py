"""health.png: the child's per-layer similarity to each parent, and its losses per probe set."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def plot_health(report: dict, path: Path, roles: tuple[str, ...]) -> None:
    """Per-layer similarity to each parent (flagged layers shaded), and losses per probe set
    (one bar per role: child, father, mother, and the base when the check had one)."""
    fig = Figure(figsize=(10, 7), constrained_layout=True)
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
    rows = report["layers"]
    layers = [r["layer"] for r in rows]
    for key, label in (("sim_father", "child vs father"), ("sim_mother", "child vs mother"),
                       ("sim_parents", "father vs mother")):
        top.plot(layers, [r[key] for r in rows], marker="o", markersize=3, label=label,
                 ls="--" if key == "sim_parents" else "-")
    for i, layer in enumerate(report["flagged_layers"]):
        top.axvspan(layer - 0.5, layer + 0.5, color="red", alpha=0.15,
                    label="interference" if i == 0 else None)
    top.set_xlabel("decoder layer")
    top.set_ylabel("cosine similarity of hidden states")
    top.xaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_title(f"Health: {report['verdict']}")
    top.legend(fontsize=8)
    names = list(report["probe_sets"])
    width = 0.8 / len(roles)
    for i, role in enumerate(roles):
        values = [report["probe_sets"][n]["loss"][role] for n in names]
        bottom.bar([x + (i - (len(roles) - 1) / 2) * width for x in range(len(names))],
                   [v if v is not None and math.isfinite(v) else 0.0 for v in values],
                   width, label=role)
    for name in report.get("function_loss", []):
        bottom.annotate("function loss", (names.index(name), 0), color="red",
                        ha="center", va="bottom", fontsize=8)
    bottom.set_xticks(range(len(names)), names)
    bottom.set_ylabel("next-token loss (nats)")
    bottom.legend(fontsize=8)
    fig.savefig(path, dpi=110)
