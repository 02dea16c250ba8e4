"""The merge-quality benchmark's record: one problem's result.json (benchmark/run.py)."""

from __future__ import annotations

from typing import ClassVar, Literal

from . import file_names
from .base import SCHEMA_VERSION, Part, Record


class TestTask(Part):
    """A task of the test table: its role, where its items come from, how many."""

    label: str  # what the tables call it (a test-item file by its skill)
    role: Literal["fitness", "guard"]
    source: str  # "fresh items (test seed 1)" or "holdout"
    n: int
    metric: str


class ModelTest(Part):
    """One model on the test items: per task its score and per-item scores (the items are
    the same for every model, in one order)."""

    omitted_when_none: ClassVar[tuple[str, ...]] = ("seed", "method", "health",
                                                    "guards_kept")

    kind: Literal["child", "start", "reference", "baseline"]  # start: a seed's CMA-ES start
    seed: int | None = None  # the search seed of a child or a start
    method: str | None = None  # a baseline's recipe: task_arithmetic, ties, dare_ties, or
    # the fixed genome's name (dare_ties_0.5, linear_0.5)
    scores: dict[str, float]
    fitness: float
    health: str | None = None
    guards_kept: bool | None = None
    item_scores: dict[str, list[float]]


class SeedComparison(Part):
    """The children of every seed minus one other model, on the same test items: the
    per-seed fitness differences and the hierarchical bootstrap over seeds and items."""

    per_seed: list[float]
    diff: float
    stderr: float
    ci_low: float
    ci_high: float
    p: float
    test: str


class ProblemResult(Record):
    """benchmark/<problem>/result.json."""

    file_name: ClassVar[str] = file_names.PROBLEM_RESULT
    omitted_when_none: ClassVar[tuple[str, ...]] = ("best_tuned", "best_healthy_tuned",
                                                    "cma_es_gain")

    problem: str
    description: str
    mode: Literal["quick", "full"]
    seeds: list[int]
    test_seed: int
    budget: dict
    tasks: dict[str, TestTask]
    models: dict[str, ModelTest]
    best_tuned: str | None = None
    best_healthy_tuned: str | None = None
    chosen: dict[str, str] = {}  # each tuned recipe's best point on the search split
    healthy: dict[str, str | None] = {}  # and its best healthy one
    comparisons: dict[str, SeedComparison]
    # each seed's child minus its own CMA-ES start (what CMA-ES added on the test items)
    cma_es_gain: SeedComparison | None = None
    seconds: dict[str, float]
    fine_tune_seconds: dict[str, float]  # training time of each fine-tune, reported apart
    yardstick_seconds: float  # matmul_yardstick() when the problem started
    created: str
    darwin_version: str
    schema_version: int = SCHEMA_VERSION
