"""A task's scores as the code passes them: `TaskScore` (what a run keeps of a candidate)
and `TaskResult` (the evaluator's whole answer, with each item's score).

Both name their primary metric (tasks.yaml) and read it as `.primary`; `.signed_primary` is
the same signed so that higher is better (what the search maximises). On disk and in the
study they are stored as rows, the flat layout of the results files and summary.json
(`row()`: `{"n": 50, "acc": 0.62, "acc_stderr": 0.07, "metric": "acc", ...}`), and read back
with `from_row`, which refuses a row without its primary metric.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ..errors import RecordError

# A result's fields that are neither a metric nor its standard error: how it was scored.
STRUCTURE = ("kind", "split", "n", "metric", "higher_is_better", "mean_gold_logprob",
             "item_ids", "item_scores")
# What a generative task reports besides its metrics (eval/evaluator.py).
GENERATION_FIELDS = ("unparsed", "thinking", "thinking_supported", "samples",
                     "first_generation")


class TaskScore(BaseModel):
    """One task's scores without the items: its metrics (each with `<metric>_stderr`), the
    primary one named, its direction, the item count and the log-likelihood tie-breaker."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    higher_is_better: bool
    n: int
    metrics: dict[str, float | None]
    mean_gold_logprob: float | None = None

    @model_validator(mode="after")
    def _primary_present(self):
        if self.metric not in self.metrics:
            raise ValueError(f"the primary metric {self.metric!r} is not among the scores")
        return self

    @property
    def primary(self) -> float:
        """The primary metric's value (nan when it could not be computed)."""
        value = self.metrics[self.metric]
        return math.nan if value is None else float(value)

    @property
    def primary_stderr(self) -> float | None:
        return self.metrics.get(f"{self.metric}_stderr")

    @property
    def signed_primary(self) -> float:
        """The primary metric signed so that higher is better."""
        return self.primary if self.higher_is_better else -self.primary

    def summary(self) -> TaskScore:
        """What trials.json keeps: the primary metric and its stderr, n, the tie-breaker."""
        keep = (self.metric, f"{self.metric}_stderr")
        return TaskScore(metric=self.metric, higher_is_better=self.higher_is_better, n=self.n,
                         metrics={k: v for k, v in self.metrics.items() if k in keep},
                         mean_gold_logprob=self.mean_gold_logprob)

    def row(self) -> dict[str, Any]:
        """The flat stored layout (metrics beside the structure fields)."""
        tie = {} if self.mean_gold_logprob is None else {
            "mean_gold_logprob": self.mean_gold_logprob}
        return {"n": self.n, **self.metrics, **tie, "metric": self.metric,
                "higher_is_better": self.higher_is_better}

    @classmethod
    def from_row(cls, row: dict[str, Any], where: str = "a task's scores") -> TaskScore:
        """A stored row read back; a malformed one is a one-line RecordError."""
        return _parsed(cls, row, where)


class TaskResult(TaskScore):
    """The evaluator's answer for one task: the scores, the split and kind it was scored on,
    every item's id and score on the primary metric, and a generative task's extra fields
    (`GENERATION_FIELDS`); with `log_samples`, lm-eval's per-item records."""

    kind: str
    split: str
    item_ids: list[int]
    item_scores: list[float]
    generation: dict[str, Any] = {}
    logged_samples: list[dict[str, Any]] | None = None

    def row(self) -> dict[str, Any]:
        """The flat layout of the holdout table's cells: the scores without the items."""
        return {"kind": self.kind, "split": self.split, **super().row(), **self.generation}

    def stored(self) -> dict[str, Any]:
        """The row with each item's id and score (the study's parent scores)."""
        return {**self.row(), "item_ids": self.item_ids, "item_scores": self.item_scores}

    @classmethod
    def from_row(cls, row: dict[str, Any], where: str = "a task's result") -> TaskResult:
        return _parsed(cls, row, where)


def _parsed(cls, row: dict[str, Any], where: str):
    """Split a flat row into the structure fields, a generative task's fields and the
    metrics, and validate it."""
    if not isinstance(row, dict):
        raise RecordError(f"{where}: expected a mapping of scores, got {type(row).__name__}")
    fields = {k: v for k, v in row.items() if k in STRUCTURE and k in cls.model_fields}
    extra = {k: v for k, v in row.items() if k in GENERATION_FIELDS}
    if extra and cls is TaskResult:
        fields["generation"] = extra
    metrics = {k: v for k, v in row.items() if k not in STRUCTURE and k not in GENERATION_FIELDS}
    try:
        return cls(**fields, metrics=metrics)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(map(str, first["loc"])) or "row"
        raise RecordError(f"{where}: {place}: {first['msg']}") from exc


def rows(results: dict[str, TaskScore]) -> dict[str, dict[str, Any]]:
    """Per task, its row (what a record stores)."""
    return {task: result.row() for task, result in results.items()}


def stored(results: dict[str, TaskResult]) -> dict[str, dict[str, Any]]:
    """Per task, its row with the items (the study's parent scores)."""
    return {task: result.stored() for task, result in results.items()}
