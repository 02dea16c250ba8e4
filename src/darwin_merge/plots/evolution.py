"""evolution.png: every trial's fitness and the best so far, by phase, and the best genome."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ..genome import GENES, SCALE_MAX, V3_GENES

PHASE_COLOURS = {1: "#9aa5b1", 2: "#1f77b4"}
# Phase 2 candidates by where they came from (other sources, e.g. a requeued candidate,
# are drawn as CMA-ES's)
SOURCES = {"tuned_baseline": ("#9467bd", "tuned baseline"),
           "proxy_top_k": ("#ff7f0e", "Phase 1 top-k"), "anchor": ("#2ca02c", "anchor"),
           "cma_es": (PHASE_COLOURS[2], "CMA-ES")}


def best_so_far(rows: list[dict], rejected: set[int]) -> tuple[list[float | None], list]:
    """At each Phase 2 candidate (in `rows`' order): the best fitness so far among the
    candidates the health gate did not reject, and that candidate's row (None before the
    first one). A rejected candidate cannot become the child, so the line ends at the
    child's fitness, not above it."""
    best: list[float | None] = []
    best_rows: list = []
    for r in rows:
        if r["number"] not in rejected and (not best or best[-1] is None
                                            or r["fitness"] > best[-1]):
            best.append(r["fitness"])
            best_rows.append(r)
        else:
            best.append(best[-1] if best else None)
            best_rows.append(best_rows[-1] if best_rows else None)
    return best, best_rows


def plot_evolution(rows: list[dict], phase1_best: list[float], out: Path,
                   title: str = "Darwin evolution", rejected: frozenset[int] = frozenset(),
                   chosen: int | None = None) -> Path:
    """Left: Phase 1 proxy best-so-far; then Phase 2 fitness per trial, the candidates
    the health gate rejected crossed out, and the best so far among the others; the genome
    values of that best candidate at each point of the search; and, where the candidates
    were health-checked, fitness against probe excess with the Pareto front (`front_panel`)."""
    checked = [r for r in rows if r.get("phase") == 2 and r.get("probe_excess") is not None]
    fig = Figure(figsize=(21 if checked else 16, 4.5))
    axes = fig.subplots(1, 4 if checked else 3)
    if checked:
        front_panel(axes[3], checked, chosen)
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
    crossed = [(x, r["fitness"]) for x, r in zip(xs, rows, strict=True)
               if r["number"] in rejected]
    if crossed:
        ax.scatter(*zip(*crossed, strict=True), color="#d62728", marker="x", s=90, zorder=4,
                   label="rejected by the health check")
    best, best_rows = best_so_far(rows, rejected)
    ax.step(xs, [float("nan") if b is None else b for b in best], where="post",
            color="black", label="best so far (health gate passed)")
    ax.set(title="Phase 2: real fitness (search split)", xlabel="candidate", ylabel="fitness")
    if rows:
        ax.legend(loc="lower right", fontsize=8)
    ax = axes[2]
    names = [n for n in (*GENES, *V3_GENES) if any(n in r["genome"] for r in best_rows
                                                    if r is not None)]
    for name in names:
        ax.plot(xs, [float("nan") if r is None else r["genome"].get(name, float("nan"))
                     for r in best_rows], label=name, lw=1.2)
    ax.set(title="Best genome over the search", xlabel="candidate", ylabel="value",
           ylim=(-0.02, 1.02 if set(names) <= set(GENES) else SCALE_MAX + 0.02))
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def front_panel(ax, rows: list[dict], chosen: int | None) -> None:
    """The health-checked Phase 2 candidates: search fitness against probe excess (nats per
    token over what the health check allows; above 0 it fails), the healthy ones' Pareto
    front joined, the unhealthy crossed out, the child circled."""
    from ..evolve.front import Candidate, pareto_front

    candidates = [Candidate(r["number"], r["fitness"], r["probe_excess"],
                            r.get("health") in ("healthy", "warning")) for r in rows]
    healthy = [c for c in candidates if c.healthy]
    if healthy:
        ax.scatter([c.excess for c in healthy], [c.fitness for c in healthy],
                   color=PHASE_COLOURS[2], s=18, label="healthy")
    sick = [c for c in candidates if not c.healthy]
    if sick:
        ax.scatter([c.excess for c in sick], [c.fitness for c in sick], color="#d62728",
                   marker="x", s=40, label="unhealthy")
    front = sorted(pareto_front(candidates), key=lambda c: c.excess)
    if front:
        ax.step([c.excess for c in front], [c.fitness for c in front], where="post",
                color="black", lw=1, label="Pareto front (healthy)")
    child = next((c for c in candidates if c.number == chosen), None)
    if child is not None:
        ax.scatter([child.excess], [child.fitness], s=160, facecolors="none",
                   edgecolors="black", lw=1.5, zorder=4, label=f"child (trial {chosen})")
    ax.axvline(0.0, color="#d62728", lw=0.8, ls="--")
    ax.set(title="Phase 2: fitness against health", xlabel="probe excess (nats/token; > 0 "
           "fails)", ylabel="search fitness")
    ax.legend(fontsize=7, loc="lower left")

