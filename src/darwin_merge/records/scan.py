"""scan.json: the Model Diagnostic Scan of two parents (scan/run.py writes it)."""

from __future__ import annotations

import math
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
    # per tensor: its statistics, scores and mri_ratio (docs/SCAN.md), each mri_ratio
    # checked to be a number in [0, 1]
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

    @field_validator("layers")
    @classmethod
    def _both_parents(cls, layers: dict) -> dict:
        if not all(layers.get(parent) for parent in ("father", "mother")):
            raise ValueError("no per-layer table for both parents")
        return layers

    @field_validator("tensors")
    @classmethod
    def _ratios_in_range(cls, tensors: dict) -> dict:
        for name, entry in tensors.items():
            value = entry.get("mri_ratio")
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"tensor {name!r} has no mri_ratio in [0, 1] (got {value!r})")
        return tensors

    def mri_ratios(self) -> dict[str, float]:
        """Tensor name -> the mother's share the scan prescribes (what a merge blends with
        the genome by its `mri_trust`)."""
        return {name: float(entry["mri_ratio"]) for name, entry in self.tensors.items()}

    def layer_distances(self) -> dict[str, list[dict[str, float]]]:
        """{parent: [{probe set: layer-skip distance} per layer]}: what the proxy weighs."""
        return {parent: [dict(row.distances) for row in rows]
                for parent, rows in self.layers.items()}
