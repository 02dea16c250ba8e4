"""The schema of families.yaml, and its rules compiled once per process.

A component rule may name the `model_types` it is for: it then applies to those types
only (a pattern one architecture needs, which could misfile another's tensors).
"""

from __future__ import annotations

import functools
import re
from enum import Enum
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

COMPONENTS = ("embed", "attn", "ffn", "norm", "moe", "vision", "audio", "per_layer_embed", "other")


class MergeMode(str, Enum):
    """How a genome's merge treats a tensor (darwin_merge.json's `mode`, spelled here only):
    the tensor's kind by the taxonomy (the first five), or a transplant its ratio chose."""

    DARE_TIES = "dare_ties"  # matrices: DARE-TIES blended with linear by merge_method_weight
    LINEAR = "linear"  # vectors (norms, biases): interpolated
    CLIP_MIN = "clip_min"  # clipping bounds: the looser bound
    CLIP_MAX = "clip_max"
    EXACT = "exact"  # non-float tensors: copied (the parents must agree)
    TRANSPLANT_FATHER = "transplant_father"  # a ratio below transplant_low: the father's
    TRANSPLANT_MOTHER = "transplant_mother"  # a ratio above transplant_high: the mother's
    TRANSPLANT_PARENT = "transplant_parent"  # N parents: a share above transplant_high: its tensor

    def __str__(self) -> str:  # tables and messages show the value
        return self.value


MERGE_KINDS = tuple(m.value for m in MergeMode)[:5]  # what families.yaml may name
CLIP_KINDS = (MergeMode.CLIP_MIN, MergeMode.CLIP_MAX)
TRANSPLANTS = (MergeMode.TRANSPLANT_FATHER, MergeMode.TRANSPLANT_MOTHER)
RULES_FILE = "families.yaml"

Component = Literal[COMPONENTS]
MergeKind = Literal[MERGE_KINDS]


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from exc
    return pattern


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ComponentRule(_Strict):
    component: Component
    pattern: str
    model_types: tuple[str, ...] = ()  # empty: every model type

    _valid = field_validator("pattern")(_compiles)


class MergeKindRule(_Strict):
    merge_kind: MergeKind
    pattern: str

    _valid = field_validator("pattern")(_compiles)


class Family(_Strict):
    model_types: tuple[str, ...]
    decoder_layer: str
    components: tuple[ComponentRule, ...] = ()

    @field_validator("decoder_layer")
    @classmethod
    def _one_group(cls, pattern: str) -> str:
        if re.compile(_compiles(pattern)).groups != 1:
            raise ValueError(f"decoder_layer {pattern!r} must capture the layer index once")
        return pattern


class Common(_Strict):
    components: tuple[ComponentRule, ...]
    merge_kinds: tuple[MergeKindRule, ...]


class FamilyRules(_Strict):
    """The whole of families.yaml."""

    common: Common
    families: dict[str, Family] = Field(min_length=1)

    @field_validator("families")
    @classmethod
    def _has_generic(cls, families: dict[str, Family]) -> dict[str, Family]:
        if "generic" not in families:
            raise ValueError("a 'generic' family is required (the fallback)")
        return families


class CompiledFamily:
    """One family's rules as compiled regular expressions, in match order."""

    def __init__(self, name: str, family: Family, common: Common):
        self.name = name
        self.model_types = frozenset(family.model_types)
        self.decoder_layer = re.compile(family.decoder_layer)
        self.components = [(re.compile(r.pattern), r.component, frozenset(r.model_types))
                           for r in family.components + common.components]
        self.merge_kinds = [(re.compile(r.pattern), r.merge_kind) for r in common.merge_kinds]

    def component_of(self, name: str, model_type: str) -> str:
        for regex, component, types in self.components:
            if (not types or model_type in types) and regex.search(name):
                return component
        return "other"


def parse_rules(text: str) -> FamilyRules:
    """Validate the YAML text of the rules (ValueError naming the first problem)."""
    try:
        return FamilyRules.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise ValueError(f"{RULES_FILE}: {where}: {error['msg']}") from exc


@functools.cache
def compiled_families() -> dict[str, CompiledFamily]:
    """Every family's compiled rules (the file is read and validated once)."""
    text = resources.files(__package__).joinpath(RULES_FILE).read_text(encoding="utf-8")
    rules = parse_rules(text)
    return {name: CompiledFamily(name, fam, rules.common) for name, fam in rules.families.items()}


def family_for(model_type: str) -> CompiledFamily:
    """The family whose model_types list `model_type`, else the generic one."""
    families = compiled_families()
    return next((fam for fam in families.values() if model_type in fam.model_types),
                families["generic"])
