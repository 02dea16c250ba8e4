"""The merge: one description of a merge (spec.py), its executor (execute.py), a genome's
plan and merge of two parents (plan.py, engine.py); see docs/MERGE.md."""

from .engine import ParentTensors, merge_models, merge_state
from .plan import MergeSettings, PlanRow, load_scan_ratios, plan_merge, plan_models

__all__ = ["MergeSettings", "ParentTensors", "PlanRow", "load_scan_ratios", "merge_models",
           "merge_state", "plan_merge", "plan_models"]
