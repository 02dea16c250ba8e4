"""The merge engine: per-tensor DARE-TIES driven by a genome (see docs/MERGE.md)."""

from .engine import ParentTensors, merge_models, merge_state, merge_tensor
from .plan import MergeSettings, PlanRow, load_scan_ratios, plan_merge, plan_models

__all__ = ["MergeSettings", "ParentTensors", "PlanRow", "load_scan_ratios", "merge_models",
           "merge_state", "merge_tensor", "plan_merge", "plan_models"]
