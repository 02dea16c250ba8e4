"""evolution.png: every trial's fitness and the best so far, by phase, and the best genome."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ..genome import GENES

PHASE_COLOURS = {1: "#9aa5b1", 2: "#1f77b4"}
# Phase 2 candidates by where they came from (other sources, e.g. a requeued candidate,
# are drawn as CMA-ES's)
SOURCES = {"proxy_top_k": ("#ff7f0e", "Phase 1 top-k"), "anchor": ("#2ca02c", "anchor"),
           "cma_es": (PHASE_COLOURS[2], "CMA-ES")}


def plot_evolution(rows: list[dict], phase1_best: list[float], out: Path,
                   title: str = "Darwin evolution") -> Path:
    """Left: Phase 1 proxy best-so-far; middle: Phase 2 fitness per trial with best so far;
    right: the genome values of the best Phase 2 trial at each point of the search."""
    fig = Figure(figsize=(16, 4.5))
    axes = fig.subplots(1, 3)
    ax = axes[0]
    if phase1_best:
        ax.plot(range(1, len(phase1_best) + 1), phase1_best, color=PHASE_COLOURS[1])
    ax.set(title="Phase 1: proxy fitness (best so far)", xlabel="CMA-ES generation",
           ylabel="proxy fitness")
    ax = axes[1]
    rows = sorted((r for r in rows if r.get("phase") == 2), key=lambda r: r["number"])
    xs = list(range(1, len(rows) + 1))
    fits = [r["fitness"] for r in rows]
    kinds = [r.get("source") if r.get("source") in SOURCES else "cma_es" for r in rows]
    for kind, (colour, label) in SOURCES.items():
        points = [(x, f) for x, f, k in zip(xs, fits, kinds, strict=True) if k == kind]
        if points:
            ax.scatter(*zip(*points, strict=True), color=colour, label=label, zorder=3)
    best, best_rows = [], []
    for r in rows:
        if not best or r["fitness"] > best[-1]:
            best.append(r["fitness"])
            best_rows.append(r)
        else:
            best.append(best[-1])
            best_rows.append(best_rows[-1])
    ax.step(xs, best, where="post", color="black", label="best so far")
    ax.set(title="Phase 2: real fitness (search split)", xlabel="candidate", ylabel="fitness")
    if rows:
        ax.legend(loc="lower right", fontsize=8)
    ax = axes[2]
    names = list(GENES)
    for name in names:
        ax.plot(xs, [r["genome"].get(name, float("nan")) for r in best_rows], label=name,
                lw=1.2)
    ax.set(title="Best genome over the search", xlabel="candidate", ylabel="value",
           ylim=(-0.02, 1.02))
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out
