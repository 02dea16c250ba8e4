"""health/health.json (health/run.py) and the summary's copy of its verdict."""

from __future__ import annotations

from typing import Any

from . import file_names
from .base import SCHEMA_VERSION, Number, Part, Record


class NonFinite(Part):
    weights: list[str] = []
    activations: list[str] = []


class HealthThresholds(Part):
    interference_ratio: Number
    interference_margin: Number
    loss_margin: Number


class HealthSettings(Part):
    device: str
    dtype: str
    max_tokens: int
    max_prompts: int | None
    batch_size: int
    probes_sha256: str


class HealthVerdict(Part):
    """The summary's copy: the verdict, why, and the flagged layers."""

    verdict: str | None = None
    reasons: list[str] | None = None
    flagged_layers: list[int] | None = None


class HealthRecord(Record):
    """The whole check (health/check.py's report, every key always written)."""

    file_name = file_names.HEALTH

    thresholds: HealthThresholds
    nonfinite: NonFinite
    settings: HealthSettings
    # whether the function-loss reference had a base (`darwin health --base`); each probe
    # set then holds the base's loss, and its `function_reference` says which reference
    # decided it ("parents" or "base"); a file written before the base existed reads False
    with_base: bool = False
    flagged_layers: list[int]
    function_loss: list[str]
    function_unjudged: list[str]  # probe sets no parent reads better than a uniform guess
    layers: list[dict[str, Any]]  # per layer: similarities, angles, interference
    # per probe set: the measures of each model, `allowed_loss` (the child's loss allowed
    # there: the reference plus loss_margin) and `function_reference` ("parents" or "base")
    probe_sets: dict[str, dict[str, Any]]
    verdict: str
    reasons: list[str]
    schema_version: int = SCHEMA_VERSION
