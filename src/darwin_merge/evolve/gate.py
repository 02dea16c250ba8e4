"""The health gate of the search: which children the search may keep (docs/EVOLVE.md).

A child is kept when its health check (health/, against both parents and, when the recipe
has one, the base, with the recipe's device, forward dtype and probe budget) finds it
healthy; with --allow-warning also when the only finding is interference. Phase 2 checks
its best seeds before CMA-ES starts there, the finish checks the best genomes (at most
MAX_HEALTH_TRIES) and the tuned baselines' best points (evolve/baselines.py); racing's
incumbent is checked as soon as it becomes the incumbent (evolve/phase2.py).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import optuna

from ..memory_plan import kept_parent_states_bytes
from . import say
from .recipe import Recipe

MAX_HEALTH_TRIES = 3
# The study's record of each checked seed's findings (health_findings), beside its verdict
# (`seed_health`).
SEED_FINDINGS = "seed_health_findings"


def child_health(recipe: Recipe, child, **options) -> dict:
    """The health report of a child (a folder or an in-memory model) against both parents
    and the recipe's base (with a base, a child may pay both fine-tunes' own costs over it:
    docs/HEALTH.md), with the recipe's device, forward dtype and probe budget. The parents'
    side is measured once per process and parents (when it fits,
    `kept_parent_states_bytes`): a run checks many children, the benchmark's seeds the same
    parents."""
    from ..health import run_health

    return run_health(child, recipe.father, recipe.mother, **probe_settings(recipe),
                      parents=measured_parents(recipe), base=recipe.base, **options)


def probe_settings(recipe: Recipe) -> dict:
    return {"probes": recipe.probes, "device": recipe.device, "dtype": recipe.forward_dtype,
            "max_tokens": recipe.probe_max_tokens, "max_prompts": recipe.probe_max_prompts}


def measured_parents(recipe: Recipe):
    """The parents' (and the recipe's base's) `ParentReference` for the recipe's health
    checks, or None when it would not fit."""
    if not kept_parent_states_bytes(recipe):
        return None
    base = None if recipe.base is None else str(recipe.base)
    return _parent_reference(str(recipe.father), str(recipe.mother), base,
                             tuple(probe_settings(recipe).items()),
                             _weights_stamp(recipe.father), _weights_stamp(recipe.mother),
                             _weights_stamp(recipe.base) if base is not None else ())


def _weights_stamp(folder) -> tuple:
    """The weight files' names, sizes and modification times: a folder written again under
    the same path is measured again."""
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                 for f in sorted(Path(folder).glob("*.safetensors")))


@lru_cache(maxsize=1)  # one pair of parents at a time: a new pair frees the last one's states
def _parent_reference(father: str, mother: str, base: str | None, settings: tuple, *stamps):
    from ..health import parent_reference

    say("health checks: both parents " + ("and the base " if base is not None else "")
        + "measured on the probes once, for every check")
    return parent_reference(father, mother, base=base, **dict(settings))


def health_accepted(verdict: str, allow_warning: bool) -> bool:
    """A child is kept when healthy; with --allow-warning also when only interference
    (a flagged layer) was found. Unhealthy children are never kept."""
    return verdict == "healthy" or (allow_warning and verdict == "warning")


def health_findings(report: dict) -> dict:
    """What the run keeps of a health report: verdict, reasons, each probe set's loss of
    the child and both parents (nats per token), and the probe excess (`probe_excess`)."""
    return {"verdict": report["verdict"], "reasons": list(report["reasons"]),
            "probe_losses": {probe: dict(measured["loss"])
                             for probe, measured in report.get("probe_sets", {}).items()},
            "probe_excess": probe_excess(report)}


def probe_excess(report: dict) -> float | None:
    """How far the child's probe loss exceeds what the check allows it, at worst over the
    probe sets that judge function (nats per token; the check fails it above 0: its
    function-loss rule, docs/HEALTH.md): the search's second objective beside fitness.
    None when no probe set judges function (a tiny model) or none was measured."""
    unjudged = set(report.get("function_unjudged", []))
    excesses = [measured["loss"]["child"] - measured["allowed_loss"]
                for name, measured in report.get("probe_sets", {}).items()
                if name not in unjudged and "allowed_loss" in measured]
    return max(excesses) if excesses else None


def rejected_by_health(study: optuna.Study, allow_warning: bool) -> set[int]:
    """The candidates whose child failed a health check during the search (a seed before
    CMA-ES started there, a candidate when it became the best so far)."""
    return {int(number) for number, verdict in study.user_attrs.get("seed_health", {}).items()
            if not health_accepted(verdict, allow_warning)}
