"""The 14-value genome that decides how much of the mother goes into every tensor.

The fields, their order and their names are those of the Darwin model card. Every
value is a share in [0, 1]; ratios are the mother's share (0 = all father, 1 = all
mother). Values are rounded to 6 decimals when a genome is made, so a genome that
went through a YAML file and back is the very same genome (same hash, same child).

Besides the 14 values a genome names the rule that turns them into per-tensor ratios
(`genome_rule`, docs/MERGE.md): v2, the default, in which each field can do what its
name says; v1, the first rule, kept so that a published genome (a file without the key)
keeps making the same child.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .arch.taxonomy import NUM_BLOCKS, TensorInfo
from .errors import UsageError

DECIMALS = 6
RULES = ("v1", "v2")
RULE_OF_OLD_FILES = "v1"  # a genome file or report without `genome_rule` predates v2
# A tensor whose final ratio is below TRANSPLANT_LOW is the father's, bit for bit; above
# TRANSPLANT_HIGH the mother's (the defaults of MergeSettings and `darwin merge`).
TRANSPLANT_LOW = 0.15
TRANSPLANT_HIGH = 0.85

# One line per field for the YAML file and the docs (the card's own glosses).
FIELD_NOTES = {
    "global_ratio": "overall mother share; component and block fields move away from it",
    "attn_ratio": "attention projections",
    "ffn_ratio": "feed-forward (MLP) and MoE expert tensors",
    "embed_ratio": "token embeddings, lm_head, per-layer embeddings",
    "density_a": "DARE keep probability for the father's task vector",
    "density_b": "DARE keep probability for the mother's task vector",
    **{f"block_{i}_ratio": f"decoder layers of adaptive block {i} (of {NUM_BLOCKS})"
       for i in range(NUM_BLOCKS)},
    "mri_trust": "weight of the scan's ratio against the genome's (needs --scan)",
    "merge_method_weight": "1 = pure DARE-TIES, 0 = pure linear interpolation",
}
RULE_NOTE = "how the values become per-tensor ratios (docs/MERGE.md)"
# The 14 numbers, in the card's order (what CMA-ES searches); genome_rule is not one of them.
GENES = tuple(FIELD_NOTES)

# Components whose genome ratio is not global_ratio (docs/MERGE.md explains the choice).
COMPONENT_FIELD = {
    "attn": "attn_ratio",
    "ffn": "ffn_ratio",
    "moe": "ffn_ratio",
    "embed": "embed_ratio",
    "per_layer_embed": "embed_ratio",
}


def _share(default: float):
    return Field(default=default, ge=0.0, le=1.0)


class Genome(BaseModel):
    """Fourteen shares in [0, 1] and the rule that reads them; defaults give a balanced,
    mildly sparse merge under the current rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    global_ratio: float = _share(0.5)
    attn_ratio: float = _share(0.5)
    ffn_ratio: float = _share(0.5)
    embed_ratio: float = _share(0.5)
    density_a: float = _share(0.9)
    density_b: float = _share(0.9)
    block_0_ratio: float = _share(0.5)
    block_1_ratio: float = _share(0.5)
    block_2_ratio: float = _share(0.5)
    block_3_ratio: float = _share(0.5)
    block_4_ratio: float = _share(0.5)
    block_5_ratio: float = _share(0.5)
    mri_trust: float = _share(0.5)
    merge_method_weight: float = _share(0.5)
    genome_rule: Literal["v1", "v2"] = "v2"

    @field_validator(*GENES, mode="after")
    @classmethod
    def _rounded(cls, value: float) -> float:
        return round(float(value), DECIMALS)

    @classmethod
    def uniform(cls, ratio: float, density: float = 1.0, mri_trust: float = 0.0,
                merge_method_weight: float = 1.0) -> Genome:
        """Every ratio equal to `ratio`: each tensor then gets exactly `ratio`."""
        ratios = {name: ratio for name in GENES if name.endswith("_ratio")}
        return cls(**ratios, density_a=density, density_b=density, mri_trust=mri_trust,
                   merge_method_weight=merge_method_weight)

    @classmethod
    def scan_only(cls) -> Genome:
        """The scan's ratios and nothing else: every ratio 0.5, `mri_trust` 1 (each tensor
        gets its `mri_ratio`), pure DARE-TIES at the default densities (no search)."""
        return cls(mri_trust=1.0, merge_method_weight=1.0)

    @classmethod
    def from_values(cls, values, genome_rule: str = "v2") -> Genome:
        """From 14 numbers in the card's field order (what CMA-ES works with)."""
        values = [float(v) for v in values]
        if len(values) != len(GENES):
            raise UsageError(f"a genome has {len(GENES)} values, got {len(values)}")
        return cls(**dict(zip(GENES, values, strict=True)), genome_rule=genome_rule)

    def values(self) -> list[float]:
        """The 14 numbers in the card's field order."""
        return [getattr(self, name) for name in GENES]

    def block_ratio(self, block: int) -> float:
        return getattr(self, f"block_{block}_ratio")

    def to_yaml(self) -> str:
        """The card's format: one `name: value` line per field, with a short gloss."""
        lines = [f"{name}: {_decimal(getattr(self, name))}  # {FIELD_NOTES[name]}"
                 for name in GENES]
        lines.append(f"genome_rule: {self.genome_rule}  # {RULE_NOTE}")
        return "\n".join(lines) + "\n"


def _decimal(value: float) -> str:
    """A plain decimal YAML reads back as a float (never `1e-05`, which YAML reads as text)."""
    text = f"{value:.{DECIMALS}f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def load_genome(path: str | Path) -> Genome:
    """Read a genome from a YAML (or JSON) file; any mistake is a one-line UsageError.

    The file may also be a `darwin_merge.json` report, whose `genome` key is used.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the genome file ({exc.strerror or exc})") from exc
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # ValueError: YAML dates like 2001-13-01; RecursionError: absurdly deep nesting
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{path}: not valid YAML ({first_line})") from exc
    if data is None:
        data = {}
    if isinstance(data, dict) and isinstance(data.get("genome"), dict):
        data = data["genome"]
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a genome file maps names to numbers (got {type(data).__name__})")
    return genome_from_dict(data, source=str(path))


def genome_from_dict(data: dict, source: str = "genome") -> Genome:
    """Validate a mapping into a Genome, naming the first bad key and value.

    A mapping without `genome_rule` is read under v1, the rule it was written for.
    """
    data = {"genome_rule": RULE_OF_OLD_FILES, **data}
    if data["genome_rule"] not in RULES:
        raise UsageError(f"{source}: genome_rule must be one of {', '.join(RULES)}, "
                         f"got {data['genome_rule']!r}")
    for key, value in data.items():
        if key == "genome_rule":
            continue
        if key not in Genome.model_fields:
            known = ", ".join(Genome.model_fields)
            raise UsageError(f"{source}: unknown genome key {key!r} (known: {known})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"{source}: {key} must be a number in [0, 1], got {value!r}")
        if not 0.0 <= value <= 1.0:  # no float(): a 400-digit YAML int would overflow
            raise UsageError(f"{source}: {key} = {value} is outside [0, 1]")
    try:
        return Genome(**data)
    except ValidationError as exc:  # pragma: no cover - the checks above catch these first
        raise UsageError(f"{source}: invalid genome ({exc.errors()[0]['msg']})") from exc


def genome_ratio(genome: Genome, info: TensorInfo) -> float:
    """The mother's share for one tensor, under the genome's rule (docs/MERGE.md).

    v2: in a decoder layer, component + block - global (each field's deviation from
    global_ratio adds up), clipped to [0, 1]; outside the layers, the component's field.
    v1: 0.4 global + 0.3 component + 0.3 block. In both, component and block fall back to
    global_ratio where a tensor has none, so a genome whose ratios all equal r gives every
    tensor r.
    """
    component = getattr(genome, COMPONENT_FIELD.get(info.component, "global_ratio"))
    if genome.genome_rule == "v1":
        block = genome.block_ratio(info.block) if info.block is not None else genome.global_ratio
        return 0.4 * genome.global_ratio + 0.3 * component + 0.3 * block
    if info.block is None:
        return component
    deviation_sum = component + genome.block_ratio(info.block) - genome.global_ratio
    # the values have 6 decimals, so the exact sum has too: rounding drops float noise
    return round(min(1.0, max(0.0, deviation_sum)), DECIMALS)


def genome_hash(genome: Genome, settings=None) -> str:
    """A stable 16-hex-digit hash of the canonical genome and the merge settings.

    Canonical: values rounded to 6 decimals, keys sorted, settings as plain JSON.
    It seeds every random draw of the merge, so it must not depend on anything
    else (not the device, the thread count, or the Python version).
    A v1 genome hashes as it did before the rule existed (so its child is unchanged);
    a v2 genome's hash includes its rule.
    """
    if settings is not None and hasattr(settings, "model_dump"):
        settings = settings.model_dump(mode="json")
    values = {k: round(getattr(genome, k), DECIMALS) for k in sorted(GENES)}
    if genome.genome_rule != "v1":
        values["genome_rule"] = genome.genome_rule
    canonical = {"genome": dict(sorted(values.items())), "settings": settings or {}}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
