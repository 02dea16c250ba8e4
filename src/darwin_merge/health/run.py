"""`run_health`: the check, health.json and health.png (written atomically), the summary."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..io import atomic_output_dir
from ..records import HealthRecord, parse_record, record_text
from .check import ROLES, check_health

HEALTH_FILE = "health.json"
HEALTH_PICTURE = "health.png"


def _finite_or_none(value):
    """JSON has no NaN/Inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def plot_health(report: dict, path: Path) -> None:
    """Per-layer similarity to each parent (flagged layers shaded), and losses per probe set."""
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
    width = 0.8 / len(ROLES)
    for i, role in enumerate(ROLES):
        values = [report["probe_sets"][n]["loss"][role] for n in names]
        bottom.bar([x + (i - 1) * width for x in range(len(names))],
                   [v if v is not None and math.isfinite(v) else 0.0 for v in values],
                   width, label=role)
    for name in report.get("function_loss", []):
        bottom.annotate("function loss", (names.index(name), 0), color="red",
                        ha="center", va="bottom", fontsize=8)
    bottom.set_xticks(range(len(names)), names)
    bottom.set_ylabel("next-token loss (nats)")
    bottom.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def run_health(child, father, mother, out: str | Path | None = None, overwrite: bool = False,
               **options) -> dict:
    """`check_health`, then health.json + health.png into OUT (when given), atomically."""
    if out is None:
        return check_health(child, father, mother, **options)
    with atomic_output_dir(out, overwrite) as tmp:
        report = _finite_or_none(check_health(child, father, mother, **options))
        record = parse_record(HealthRecord, report, "the health report being written")
        (tmp / HEALTH_FILE).write_text(record_text(record, indent=1), encoding="utf-8")
        if report["layers"]:
            plot_health(report, tmp / HEALTH_PICTURE)
    return report


def summary_lines(report: dict) -> list[str]:
    lines = [f"verdict: {report['verdict']}"]
    lines += [f"  - {reason}" for reason in report["reasons"]]
    rows = [r for r in report["layers"]
            if all(isinstance(r[k], float) and math.isfinite(r[k])
                   for k in ("sim_father", "sim_mother"))]
    if rows:
        low_f = min(rows, key=lambda r: r["sim_father"])
        low_m = min(rows, key=lambda r: r["sim_mother"])
        lines.append(f"  lowest similarity to the father: layer {low_f['layer']} "
                     f"({low_f['sim_father']:.4f}); to the mother: layer {low_m['layer']} "
                     f"({low_m['sim_mother']:.4f})")
    return lines
