"""Health check of a child against both parents (interference, function loss, non-finite)."""

from .check import HealthThresholds, check_health, nonfinite_weights
from .run import run_health

__all__ = ["HealthThresholds", "check_health", "nonfinite_weights", "run_health"]
