"""darwin_mother.json: how a demo fine-tune was made (demo/mother.py writes it beside the
weights; the benchmark reports its training time apart)."""

from __future__ import annotations

from typing import Any

from . import file_names
from .base import SCHEMA_VERSION, Number, Record


class FineTuneRecord(Record):
    file_name = file_names.FINE_TUNE_RECORD

    father: str  # the model fine-tuned
    recipe: dict[str, Any]  # MotherRecipe.key(): what the folder's name hashes
    data: str  # the problem generators' version
    device: str
    trained_tensors: int
    trained_params: int
    problems: int
    tokens: int
    seconds: Number
    tokens_per_second: Number
    first_loss: Number
    final_loss: Number
    schema_version: int = SCHEMA_VERSION
