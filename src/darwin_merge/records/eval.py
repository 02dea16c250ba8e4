"""An evaluation's results file in lm-evaluation-harness's layout (eval/lm_eval_layout.py):
`darwin eval --out` and RUN_DIR/holdout/results_<model>.json.

The lm-eval backend's file is lm-eval's own results dict (its keys are lm-eval's, not ours)
with the `darwin` block added; only darwin's own layout is held to this schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from .base import Number, Record


class EvalResults(Record):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True,
                              validate_by_alias=True)
    file_name = "results file (lm-eval layout)"
    omitted_when_none = ("task_hashes",)

    # per task: alias, name, sample_len and "<metric>,<filter>" scores with their stderr
    results: dict[str, dict[str, Any]]
    group_subtasks: dict[str, list[str]]
    configs: dict[str, dict[str, Any]]
    versions: dict[str, str]
    n_shot: dict[str, int] = Field(alias="n-shot")
    higher_is_better: dict[str, dict[str, bool]]
    n_samples: dict[str, dict[str, int]] = Field(alias="n-samples")
    config: dict[str, Any]
    date: Number
    model_name: str
    # darwin's fields with no lm-eval place: version, config hash or run, per-task extras
    darwin: dict[str, Any]
    task_hashes: dict[str, str] | None = None
