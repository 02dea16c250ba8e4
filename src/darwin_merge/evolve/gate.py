"""The health gate of the search: which children the search may keep (docs/EVOLVE.md).

A child is kept when its health check (health/, against both parents, with the recipe's
device, forward dtype and probe budget) finds it healthy; with --allow-warning also when
the only finding is interference. Phase 2 checks its best seeds before CMA-ES starts there,
the finish checks the best genomes (at most MAX_HEALTH_TRIES) and the tuned baselines'
best points (evolve/baselines.py).
"""

from __future__ import annotations

import optuna

from .recipe import Recipe

MAX_HEALTH_TRIES = 3
# The study's record of each checked seed's findings (health_findings), beside its verdict
# (`seed_health`).
SEED_FINDINGS = "seed_health_findings"


def child_health(recipe: Recipe, child, **options) -> dict:
    """The health report of a child (a folder or an in-memory model) against both parents,
    with the recipe's device, forward dtype and probe budget."""
    from ..health import check_health

    return check_health(child, recipe.father, recipe.mother, device=recipe.device,
                        dtype=recipe.forward_dtype, max_tokens=recipe.probe_max_tokens,
                        max_prompts=recipe.probe_max_prompts, **options)


def health_accepted(verdict: str, allow_warning: bool) -> bool:
    """A child is kept when healthy; with --allow-warning also when only interference
    (a flagged layer) was found. Unhealthy children are never kept."""
    return verdict == "healthy" or (allow_warning and verdict == "warning")


def health_findings(report: dict) -> dict:
    """What the run keeps of a health report: verdict, reasons and each probe set's loss
    of the child and both parents (nats per token)."""
    return {"verdict": report["verdict"], "reasons": list(report["reasons"]),
            "probe_losses": {probe: dict(measured["loss"])
                             for probe, measured in report.get("probe_sets", {}).items()}}


def rejected_by_health(study: optuna.Study, allow_warning: bool) -> set[int]:
    """The candidates whose child failed the health check before CMA-ES started."""
    return {int(number) for number, verdict in study.user_attrs.get("seed_health", {}).items()
            if not health_accepted(verdict, allow_warning)}
