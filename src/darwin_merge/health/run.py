"""`run_health`: the check, health.json and health.png (written atomically), the summary."""

from __future__ import annotations

import math
from pathlib import Path

from ..io import atomic_output_dir
from ..plots.health import plot_health
from ..records import HealthRecord, file_names, parse_record, record_text
from .check import BASE, ROLES, check_health


def _finite_or_none(value):
    """JSON has no NaN/Inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def run_health(child, father, mother, out: str | Path | None = None, overwrite: bool = False,
               **options) -> dict:
    """`check_health`, then health.json + health.png into OUT (when given), atomically."""
    if out is None:
        return check_health(child, father, mother, **options)
    with atomic_output_dir(out, overwrite) as tmp:
        report = _finite_or_none(check_health(child, father, mother, **options))
        record = parse_record(HealthRecord, report, "the health report being written")
        (tmp / file_names.HEALTH).write_text(record_text(record, indent=1), encoding="utf-8")
        if report["layers"]:
            plot_health(report, tmp / file_names.HEALTH_PICTURE,
                        (*ROLES, BASE) if report.get("with_base") else ROLES)
    return report


def _loss_text(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "n/a"


def probe_loss_lines(report: dict) -> list[str]:
    """Per probe set: the child's loss, the loss allowed there and which reference decided it
    (the parents, or with a base the base's), and the reference models' losses."""
    if not report["probe_sets"]:
        return []
    base = " and the base's" if report.get("with_base") else ""
    lines = [f"  loss per probe set (nats per token): the child's, the allowed (reference + "
             f"loss margin) and the parents'{base}"]
    for name, result in report["probe_sets"].items():
        loss = result["loss"]
        if name in report["function_unjudged"]:
            judged = "not judged"
        elif "allowed_loss" in result:
            judged = (f"allowed {_loss_text(result['allowed_loss'])} "
                      f"({result['function_reference']} reference)")
        else:  # a report read from a file written before the reference was recorded
            judged = "judged"
        others = ", ".join(f"{role} {_loss_text(loss[role])}" for role in (*ROLES[1:], BASE)
                           if role in loss)
        lost = ": function loss" if name in report["function_loss"] else ""
        lines.append(f"    {name}: child {_loss_text(loss['child'])}, {judged}; {others}{lost}")
    return lines


def summary_lines(report: dict) -> list[str]:
    lines = [f"verdict: {report['verdict']}"]
    lines += [f"  - {reason}" for reason in report["reasons"]]
    if report["function_unjudged"]:
        lines.append(f"  function loss not judged on {', '.join(report['function_unjudged'])}: "
                     "neither parent reads it better than a uniform guess (give --probes "
                     "text they read)")
    lines += probe_loss_lines(report)
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
