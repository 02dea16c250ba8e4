"""The merge-quality benchmark's picture: methods x problems (darwin_recipes/benchmark gives
each problem's models by method)."""

from __future__ import annotations

import statistics
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from ..records.benchmark import ModelTest

# One problem of the picture: its name and {method: its models} (the child: one per seed).
ProblemBars = tuple[str, dict[str, list[ModelTest]]]

# A bar drawn hatched: its model broke a guard on the test items or failed the health check.
FLAGGED_HATCH = "///"


def flagged(model: ModelTest) -> bool:
    return model.guards_kept is False or model.health == "unhealthy"


def draw(problems: list[ProblemBars], path: Path) -> Path:
    """methods x problems: each problem's test fitness per method (the child's bar, and
    the CMA-ES starts', is the mean over seeds, its dots the seeds); hatched where a guard
    broke on the test items or the health check failed (a child's bar: any seed; its dots
    red for those seeds)."""
    methods = ["child", *dict.fromkeys(m for _, bars in problems for m in bars if m != "child")]
    fig = Figure(figsize=(max(7.0, 1.2 * len(methods) * len(problems) / 2), 4.2))
    ax = fig.add_subplot()
    width, labelled = 0.8 / len(methods), set()

    def label(method: str) -> str | None:
        if method in labelled:
            return None
        labelled.add(method)
        return method

    for i, method in enumerate(methods):
        for j, (_, bars) in enumerate(problems):
            x = j + (i - (len(methods) - 1) / 2) * width
            color = f"C{i}" if len(methods) <= 10 else colormaps["tab20"](i % 20)  # distinct
            if method not in bars:
                continue
            models = bars[method]  # one per seed for the child and the CMA-ES starts
            values = [m.fitness for m in models]
            ax.bar(x, statistics.mean(values), width, color=color, label=label(method),
                   hatch=FLAGGED_HATCH if any(map(flagged, models)) else None)
            if method == "child" or len(models) > 1:
                ax.scatter([x] * len(values), values, s=10, zorder=3,
                           color=["red" if flagged(m) else "black" for m in models])
    ax.set_xticks(range(len(problems)), [name for name, _ in problems], fontsize=8)
    ax.set_ylabel("test fitness")
    ax.set_title("Test fitness by method (child: mean over seeds, dots: each seed; hatched or "
                 "red: a guard broken on the test items, or unhealthy)", fontsize=10)
    legend = ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for handle in legend.legend_handles:  # a method's colour, not its first bar's hatch
        handle.set_hatch(None)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
