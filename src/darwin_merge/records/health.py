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
    flagged_layers: list[int]
    function_loss: list[str]
    function_unjudged: list[str]  # probe sets no parent reads better than a uniform guess
    layers: list[dict[str, Any]]  # per layer: similarities, angles, interference
    probe_sets: dict[str, dict[str, Any]]  # per probe set: the measures of each model
    verdict: str
    reasons: list[str]
    schema_version: int = SCHEMA_VERSION
