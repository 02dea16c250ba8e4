"""Health check of a child against both parents (interference, function loss, non-finite)."""

from .check import (
                    HealthThresholds,
                    ParentReference,
                    check_health,
                    nonfinite_weights,
                    parent_reference,
)
from .run import run_health

__all__ = ["HealthThresholds", "ParentReference", "check_health", "nonfinite_weights",
           "parent_reference", "run_health"]
