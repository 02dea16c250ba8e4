"""scan.json: the Model Diagnostic Scan of two parents (scan/run.py writes it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from . import file_names
from .base import Number, Part, Record

SCAN_VERSION = 1  # scan.json's own `version` key (it had one before the other records)


class ScanSettings(Part):
    """How the scan ran; the attribution formula adds its own five settings."""

    omitted_when_none = ("attribution_measurements", "attribution_items", "temperature",
                         "contrast_weight", "ownership_weight", "eval_dtype")

    device: str
    dtype: str
    max_tokens: int
    batch_size: int
    max_prompts: int | None
    bins: int
    max_elements: int
    seed: int
    skip_method: str
    static_weight: Number
    probe_weight: Number
    transplant_low: Number
    transplant_high: Number
    tokenizer: str
    formula: str
    attribution_measurements: int | None = None
    attribution_items: int | None = None
    temperature: Number | None = None
    contrast_weight: Number | None = None
    ownership_weight: Number | None = None
    eval_dtype: str | None = None  # the forward passes' dtype, when not `dtype`


class Sampling(Part):
    bins: int
    max_elements: int
    seed: int
    method: str
    sampled_tensors: list[str]
    max_entropy_bits: Number


class LayerRow(Part):
    """One decoder layer of a parent: its distance per probe set and its probe score."""

    layer: int
    distances: dict[str, Number]
    probe_score: Number


class TransplantCounts(Part):
    father: int
    mother: int
    blended: int


class ScanRecord(Record):
    file_name = file_names.SCAN
    omitted_when_none = ("attribution", "inputs", "inputs_sha256")

    version: int
    darwin_version: str
    father: str
    mother: str
    base: str | None
    family: str
    num_layers: int
    formula: str
    probe_weights: dict[str, Number]
    probes_sha256: str
    probe_sets: dict[str, int]
    settings: ScanSettings
    sampling: Sampling
    layers: dict[Literal["father", "mother"], list[LayerRow]]
    transplant: TransplantCounts
    # per tensor: its statistics, scores and mri_ratio (docs/SCAN.md); merge.plan checks
    # each mri_ratio when a merge reads the file
    tensors: dict[str, dict[str, Any]]
    attribution: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None
    inputs_sha256: str | None = None

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if version != SCAN_VERSION:
            raise ValueError(f"scan version {version!r}, expected {SCAN_VERSION}")
        return version
