"""The merge-quality benchmark's picture: methods x problems (benchmark/report.py's rows)."""

from __future__ import annotations

import statistics
from pathlib import Path

from matplotlib.figure import Figure

from ..benchmark.report import children, method_rows
from ..records.benchmark import ProblemResult


def draw(results: list[ProblemResult], path: Path) -> Path:
    """methods x problems: each problem's test fitness per method (the child's bar is the
    mean over seeds, its dots the seeds)."""
    methods = ["child", *dict.fromkeys(m for r in results for m in method_rows(r))]
    fig = Figure(figsize=(max(7.0, 1.2 * len(methods) * len(results) / 2), 4.2))
    ax = fig.add_subplot()
    width, labelled = 0.8 / len(methods), set()

    def label(method: str) -> str | None:
        if method in labelled:
            return None
        labelled.add(method)
        return method

    for i, method in enumerate(methods):
        for j, r in enumerate(results):
            x = j + (i - (len(methods) - 1) / 2) * width
            color = f"C{i % 10}"
            if method == "child":
                values = [r.models[n].fitness for n in children(r)]
                ax.bar(x, statistics.mean(values), width, color=color, label=label(method))
                ax.scatter([x] * len(values), values, s=10, color="black", zorder=3)
            elif method in method_rows(r):
                ax.bar(x, r.models[method_rows(r)[method]].fitness, width, color=color,
                       label=label(method))
    ax.set_xticks(range(len(results)), [r.problem for r in results], fontsize=8)
    ax.set_ylabel("test fitness")
    ax.set_title("Test fitness by method (child: mean over seeds, dots: each seed)",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
