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
             "mean_clipped_gold_logprob", "item_ids", "item_scores", "item_gold_logprobs")
# An item's gold log-probability (nats per character of the gold answer) enters the
# search's fitness clipped at -GOLD_LOGPROB_CLIP: a typical one lies in -0.1..-5, so the
# clip keeps the signal and bounds what one item can weigh (docs/EVOLVE.md, "Fitness").
GOLD_LOGPROB_CLIP = 10.0
# What a generative task reports besides its metrics (eval/evaluator.py).
GENERATION_FIELDS = ("unparsed", "thinking", "thinking_supported", "samples",
                     "first_generation")


class TaskScore(BaseModel):
    """One task's scores without the items: its metrics (each with `<metric>_stderr`), the
    primary one named, its direction, the item count and the log-likelihood tie-breaker:
    the mean gold log-probability (per character) and the mean of its clipped per-item
    values (`clipped_gold_logprobs`: what the search's fitness adds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    higher_is_better: bool
    n: int
    metrics: dict[str, float | None]
    mean_gold_logprob: float | None = None
    mean_clipped_gold_logprob: float | None = None

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
                         mean_gold_logprob=self.mean_gold_logprob,
                         mean_clipped_gold_logprob=self.mean_clipped_gold_logprob)

    def row(self) -> dict[str, Any]:
        """The flat stored layout (metrics beside the structure fields)."""
        tie = {name: value for name in ("mean_gold_logprob", "mean_clipped_gold_logprob")
               if (value := getattr(self, name)) is not None}
        return {"n": self.n, **self.metrics, **tie, "metric": self.metric,
                "higher_is_better": self.higher_is_better}

    @classmethod
    def from_row(cls, row: dict[str, Any], where: str = "a task's scores") -> TaskScore:
        """A stored row read back; a malformed one is a one-line RecordError."""
        return _parsed(cls, row, where)


class TaskResult(TaskScore):
    """The evaluator's answer for one task: the scores, the split and kind it was scored on,
    every item's id, score on the primary metric and (log-likelihood tasks) gold
    log-probability per character (`item_gold_logprobs`, None for a generative task or a
    row stored before they were kept), and a generative task's extra fields
    (`GENERATION_FIELDS`); with `log_samples`, lm-eval's per-item records."""

    kind: str
    split: str
    item_ids: list[int]
    item_scores: list[float]
    item_gold_logprobs: list[float] | None = None
    generation: dict[str, Any] = {}
    logged_samples: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _logprobs_aligned(self):
        if self.item_gold_logprobs is not None and \
                len(self.item_gold_logprobs) != len(self.item_scores):
            raise ValueError("item_gold_logprobs and item_scores differ in length")
        return self

    def row(self) -> dict[str, Any]:
        """The flat layout of the holdout table's cells: the scores without the items."""
        return {"kind": self.kind, "split": self.split, **super().row(), **self.generation}

    def stored(self) -> dict[str, Any]:
        """The row with each item's id, score and gold log-probability (the study's parent
        scores)."""
        logprobs = {} if self.item_gold_logprobs is None else {
            "item_gold_logprobs": self.item_gold_logprobs}
        return {**self.row(), "item_ids": self.item_ids, "item_scores": self.item_scores,
                **logprobs}

    @classmethod
    def from_row(cls, row: dict[str, Any], where: str = "a task's result") -> TaskResult:
        return _parsed(cls, row, where)


def clipped_gold_logprobs(logprobs: list[float]) -> list[float]:
    """Per-item gold log-probabilities clipped to [-GOLD_LOGPROB_CLIP, 0] (nan stays nan:
    a broken model's)."""
    return [lp if math.isnan(lp) else min(0.0, max(-GOLD_LOGPROB_CLIP, lp)) for lp in logprobs]


def gold_logprob_means(logprobs: list[float] | None) -> dict[str, float | None]:
    """A task's two tie-breaker fields from its per-item gold log-probabilities: the plain
    mean and the mean of the clipped values (both None without log-probabilities)."""
    if not logprobs:
        return {"mean_gold_logprob": None, "mean_clipped_gold_logprob": None}
    clipped = clipped_gold_logprobs(logprobs)
    return {"mean_gold_logprob": sum(logprobs) / len(logprobs),
            "mean_clipped_gold_logprob": sum(clipped) / len(clipped)}


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
