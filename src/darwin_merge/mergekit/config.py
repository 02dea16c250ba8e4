"""A mergekit YAML config, validated, and its parameters evaluated per tensor.

The subset darwin runs (docs/MERGE.md, "mergekit interop"): `merge_method` linear,
ties, dare_ties or task_arithmetic; `models` (or one whole-model slice) with
`parameters` weight/density as mergekit writes them (a number, a gradient list over
the layers, or a list of `{filter, value}` conditions); `base_model`; global
`parameters` (normalize, int8_mask, rescale, lambda); `dtype`/`out_dtype`;
`tokenizer_source` naming one of the models. Anything else is a one-line UsageError.
Only the facts of mergekit's format are followed here; mergekit itself is not used.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import UsageError

METHODS = ("linear", "ties", "dare_ties", "task_arithmetic")
TASK_VECTOR_METHODS = ("ties", "dare_ties", "task_arithmetic")
# mergekit's defaults for each method's global parameters
GLOBAL_DEFAULTS = {
    "linear": {"normalize": True},
    "ties": {"normalize": True, "int8_mask": False, "rescale": False, "lambda": 1.0},
    "dare_ties": {"normalize": False, "int8_mask": False, "rescale": True, "lambda": 1.0},
    "task_arithmetic": {"normalize": False, "int8_mask": False, "rescale": False, "lambda": 1.0},
}
TENSOR_DEFAULTS = {"linear": {"weight": None},
                   **{m: {"weight": None, "density": 1.0} for m in TASK_VECTOR_METHODS}}
FLAGS = ("normalize", "int8_mask", "rescale")
NEAR_KNOT = 1e-9  # a gradient position this close to a list entry takes that entry exactly

Number = bool | int | float
Gradient = list[float]


class Condition(BaseModel):
    """One `{filter, value}` entry: the value applies to tensors whose name contains
    `filter` (no filter, or `*`, matches every tensor); the first match wins."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: Number | Gradient
    filter: str | None = None


Setting = Number | Gradient | list[Condition]
Parameters = dict[str, Setting]


class ModelEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    parameters: Parameters | None = None


class SliceSource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    layer_range: tuple[int, int]
    parameters: Parameters | None = None


class OutputSlice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sources: list[SliceSource]
    base_model: str | None = None
    parameters: Parameters | None = None


class MergekitConfig(BaseModel):
    """The YAML file as mergekit reads it, limited to what darwin can run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    merge_method: Literal["linear", "ties", "dare_ties", "task_arithmetic"]
    models: list[ModelEntry] | None = None
    slices: list[OutputSlice] | None = None
    base_model: str | None = None
    parameters: Parameters | None = None
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    out_dtype: Literal["float32", "bfloat16", "float16"] | None = None
    tokenizer_source: str | None = None

    @field_validator("models", "slices")
    @classmethod
    def _not_empty(cls, value):
        if value is not None and not value:
            raise ValueError("must list at least one entry")
        return value


UNSUPPORTED_KEYS = {
    "modules": "multi-module merges",
    "tokenizer": "the `tokenizer` section (darwin keeps one model's tokenizer)",
    "chat_template": "`chat_template` (the child keeps its source model's template)",
}


def load_config(path: str | Path) -> MergekitConfig:
    """Read and validate a mergekit YAML file; every mistake is a one-line UsageError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the mergekit config ({exc.strerror or exc})"
                         ) from exc
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{path}: not valid YAML ({first_line})") from exc
    return config_from_dict(data, str(path))


def config_from_dict(data, source: str = "mergekit config") -> MergekitConfig:
    if not isinstance(data, dict):
        raise UsageError(f"{source}: a mergekit config is a mapping (got {type(data).__name__})")
    for key, what in UNSUPPORTED_KEYS.items():
        if key in data:
            raise UsageError(f"{source}: {key}: {what} not supported by darwin")
    try:
        config = MergekitConfig(**data)
    except ValidationError as exc:
        raise UsageError(f"{source}: {_first_error(exc)}") from exc
    _check_shape(config, source)
    return config


def _first_error(exc: ValidationError) -> str:
    """`where: what` for the first error, in the config's own terms."""
    error = exc.errors()[0]
    loc = [shown(str(p)) for p in error["loc"]]
    if "parameters" in loc[:-1]:  # inside a setting: pydantic would name a union branch
        loc = loc[:loc.index("parameters") + 2]
        return (f"{'.'.join(loc)}: must be a number, a list of numbers (a gradient) or a "
                "list of {filter, value} conditions")
    if error["type"] == "extra_forbidden":
        return f"{'.'.join(loc)}: unknown key"
    return f"{'.'.join(loc) or 'config'}: {error['msg']}"


def shown(key: str) -> str:
    """A key as an error line shows it: as written, or quoted with escapes when it holds a
    line break or another unprintable character (an error stays one line)."""
    return key if key.isprintable() and key.strip() else repr(key)


def _check_shape(config: MergekitConfig, source: str) -> None:
    """What the schema cannot say: one of models/slices, known parameter names, ranges."""
    if (config.models is None) == (config.slices is None):
        raise UsageError(f"{source}: give exactly one of `models` or `slices`")
    if config.slices is not None and len(config.slices) != 1:
        raise UsageError(f"{source}: slices: {len(config.slices)} output slices; darwin runs "
                         "one whole-model slice only (layer stacking is not supported)")
    method = config.merge_method
    known = set(GLOBAL_DEFAULTS[method]) | set(TENSOR_DEFAULTS[method])
    for where, parameters in _parameter_blocks(config):
        for name, setting in parameters.items():
            if name not in known:
                raise UsageError(f"{source}: {where}.{shown(name)}: not a parameter of {method} "
                                 f"(known: {', '.join(sorted(known))})")
            _check_kind(name, setting, f"{source}: {where}.{shown(name)}")
    if method in TASK_VECTOR_METHODS and config.base_model is None and (
            config.slices is None or config.slices[0].base_model is None):
        raise UsageError(f"{source}: {method} needs a base_model (the task vectors are "
                         "each model minus the base)")


def _parameter_blocks(config: MergekitConfig):
    if config.parameters:
        yield "parameters", config.parameters
    for i, entry in enumerate(config.models or []):
        if entry.parameters:
            yield f"models.{i}.parameters", entry.parameters
    for i, output in enumerate(config.slices or []):
        if output.parameters:
            yield f"slices.{i}.parameters", output.parameters
        for j, src in enumerate(output.sources):
            if src.parameters:
                yield f"slices.{i}.sources.{j}.parameters", src.parameters


def _check_kind(name: str, setting: Setting, where: str) -> None:
    """Switches are true/false; weight and lambda numbers; density a number in [0, 1]."""
    try:
        values = list(_numbers(setting))
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from exc
    for value in values:
        if name in FLAGS:
            if not isinstance(value, bool):
                raise UsageError(f"{where}: must be true or false, got {value!r}")
        elif isinstance(value, bool) or not math.isfinite(value):
            raise UsageError(f"{where}: must be a finite number, got {value!r}")
        elif name == "density" and not 0.0 <= value <= 1.0:
            raise UsageError(f"{where}: {value!r} is outside [0, 1]")


def _numbers(setting: Setting):
    if isinstance(setting, list):
        if not setting:
            raise UsageError("an empty list gives no value")
        for entry in setting:
            yield from _numbers(entry.value if isinstance(entry, Condition) else entry)
    else:
        yield setting


# -- evaluating a parameter for one tensor ---------------------------------------------
def evaluate(setting: Setting, tensor_name: str, t: float):
    """The value of a setting for one tensor at depth `t` in [0, 1], or None when none of
    its conditions matches (mergekit then looks at the next, more general, level).

    A gradient list is interpolated linearly over t (entry i sits at t = i / (n - 1)),
    as mergekit does; a position within 1e-9 of an entry takes that entry exactly, so
    a list with one value per layer gives each layer its value with no float noise.
    """
    if not isinstance(setting, list):
        return setting
    if setting and isinstance(setting[0], Condition):
        for condition in setting:
            if condition.filter in (None, "*") or condition.filter in tensor_name:
                return evaluate(condition.value, tensor_name, t)
        return None
    scaled = t * (len(setting) - 1)
    nearest = round(scaled)
    if abs(scaled - nearest) < NEAR_KNOT:
        return float(setting[nearest])
    low = int(scaled)
    high = min(len(setting) - 1, low + 1)
    frac = scaled - low
    return (1 - frac) * setting[low] + frac * setting[high]


def first_value(levels: list[Parameters | None], name: str, tensor_name: str, t: float):
    """The first level (model, slice, global) whose setting for `name` gives a value."""
    for parameters in levels:
        if parameters and name in parameters:
            value = evaluate(parameters[name], tensor_name, t)
            if value is not None:
                return value
    return None
