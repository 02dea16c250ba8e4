"""Evaluation: lm-eval-compatible log-likelihood tasks, generative answers, fixed splits.

`evaluate` scores an in-memory model (the search calls it for every candidate);
`evaluate_path` loads a folder and adds what a results file records.
"""

from .evaluator import evaluate, multiple_choice_metrics
from .report import evaluate_path, write_results
from .results import TaskResult, TaskScore
from .tasks import item_split, registry, resolve_tasks, select_items

__all__ = ["evaluate", "evaluate_path", "item_split", "multiple_choice_metrics", "registry",
           "resolve_tasks", "select_items", "write_results", "TaskResult", "TaskScore"]
