"""The 14-value genome that decides how much of the mother goes into every tensor.

The fields, their order and their names are those of the Darwin model card. Every
value is a share in [0, 1]; ratios are the mother's share (0 = all father, 1 = all
mother). Values are rounded to 6 decimals when a genome is made, so a genome that
went through a YAML file and back is the very same genome (same hash, same child).

Besides the 14 values a genome names the rule that turns them into per-tensor ratios
(`genome_rule`, docs/MERGE.md): v2, the default, in which each field can do what its
name says; v1, the first rule, kept so that a published genome (a file without the key)
keeps making the same child; v3, v2's ratios and five more genes (`V3_GENES`) with which
the standard recipes are points of the genome: a task-vector scale per parent (weights no
longer tied to sum to 1), TIES's magnitude trim beside DARE's drop, sign election on or off
and the disjoint mean. Only a v3 genome has those five values.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from .arch.taxonomy import NUM_BLOCKS, TensorInfo
from .errors import UsageError

DECIMALS = 6
RULES = ("v1", "v2", "v3")
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
# The genes only rule v3 reads (docs/MERGE.md, "Genome rule v3"), after the 14.
SCALE_MAX = 2.0
V3_NOTES = {
    "scale_a": "the father's task-vector weight where a tensor's ratio is 0.5 (weight "
               "2 (1 - ratio) scale_a): task arithmetic's lambda",
    "scale_b": "the mother's task-vector weight where a tensor's ratio is 0.5 (weight "
               "2 ratio scale_b)",
    "trim_density": "TIES's trim: each task vector keeps this fraction of its largest "
                    "entries, before DARE's drop (1: no trim)",
    "sign_election": "TIES's sign election when >= 0.5, a plain sum below",
    "disjoint_mean": "the disjoint mean (divided by the weight of the entries kept) when "
                     ">= 0.5, a sum below",
}
V3_GENES = tuple(V3_NOTES)
# The v3 genes' values under which a v3 genome merges as its v2 reading does (the
# weights (1 - ratio, ratio), no magnitude trim, sign election, a sum): what a v2 genome
# becomes (`Genome.as_v3`) and what a v3 genome file that leaves one out means.
V3_AS_V2 = {"scale_a": 0.5, "scale_b": 0.5, "trim_density": 1.0, "sign_election": 1.0,
            "disjoint_mean": 0.0}
# Every gene's range (the search's bounds too): shares in [0, 1], the scales in [0, 2].
GENE_BOUNDS = {**{name: (0.0, 1.0) for name in (*GENES, *V3_GENES)},
               "scale_a": (0.0, SCALE_MAX), "scale_b": (0.0, SCALE_MAX)}
SWITCH_ON = 0.5  # a switch gene (sign_election, disjoint_mean) is on at or above this


def genes_of(rule: str) -> tuple[str, ...]:
    """The genes a rule reads, in the card's order: the 14, and under v3 five more."""
    return GENES + V3_GENES if rule == "v3" else GENES

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


def _v3_gene(name: str):
    low, high = GENE_BOUNDS[name]
    return Field(default=None, ge=low, le=high)


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
    scale_a: float | None = _v3_gene("scale_a")
    scale_b: float | None = _v3_gene("scale_b")
    trim_density: float | None = _v3_gene("trim_density")
    sign_election: float | None = _v3_gene("sign_election")
    disjoint_mean: float | None = _v3_gene("disjoint_mean")
    genome_rule: Literal["v1", "v2", "v3"] = "v2"

    @model_validator(mode="before")
    @classmethod
    def _v3_genes_for_v3(cls, data):
        """A v3 genome has all five v3 genes (one left out: its V3_AS_V2 value); a v1 or v2
        genome has none (they would be ignored, so they are refused)."""
        if not isinstance(data, dict):
            return data
        if data.get("genome_rule") == "v3":
            return {**V3_AS_V2, **{k: v for k, v in data.items() if v is not None}}
        given = [k for k in V3_GENES if data.get(k) is not None]
        if given:
            raise ValueError(f"{given[0]} is a gene of genome rule v3 only (this genome's "
                             f"rule is {data.get('genome_rule', 'v2')})")
        return data

    @field_validator(*GENES, *V3_GENES, mode="after")
    @classmethod
    def _rounded(cls, value: float | None) -> float | None:
        return None if value is None else round(float(value), DECIMALS)

    @model_serializer(mode="wrap")
    def _without_absent_genes(self, handler):
        """A v1 or v2 genome's dump has no v3 keys (records and hashes stay as they were)."""
        return {k: v for k, v in handler(self).items() if not (k in V3_GENES and v is None)}

    @property
    def genes(self) -> tuple[str, ...]:
        return genes_of(self.genome_rule)

    @property
    def elects_signs(self) -> bool:
        """Under v3, whether the task vectors go through TIES's sign election (v1, v2: yes)."""
        return self.sign_election is None or self.sign_election >= SWITCH_ON

    @property
    def takes_disjoint_mean(self) -> bool:
        """Under v3, whether the merged task vectors are TIES's disjoint mean (v1, v2: the
        merge settings decide)."""
        return self.disjoint_mean is not None and self.disjoint_mean >= SWITCH_ON

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
    def task_vectors(cls, scale: float, trim_density: float = 1.0, dare_density: float = 1.0,
                     sign_election: bool = False, disjoint_mean: bool = False) -> Genome:
        """A v3 genome that is a standard recipe: every tensor's ratio 0.5, both task
        vectors at weight `scale`, trimmed, summed with or without sign election, as a sum
        or the disjoint mean, no linear part and no scan (mergekit/standard.py)."""
        return cls(**{**cls.uniform(0.5, density=dare_density).model_dump(),
                      "genome_rule": "v3", "scale_a": scale, "scale_b": scale,
                      "trim_density": trim_density, "sign_election": float(sign_election),
                      "disjoint_mean": float(disjoint_mean)})  # validated: a scale > 2 fails

    def as_v3(self) -> Genome:
        """A v2 genome read under v3 (the V3_AS_V2 values): the same ratios and densities;
        the same arithmetic but for the seed of DARE's masks and mergekit's tie sign."""
        if self.genome_rule == "v3":
            return self
        if self.genome_rule != "v2":
            raise UsageError(f"only a v2 genome reads the same under v3 (this one is "
                             f"{self.genome_rule})")
        return Genome(**{**self.model_dump(), "genome_rule": "v3"})

    @classmethod
    def from_values(cls, values, genome_rule: str = "v2") -> Genome:
        """From the rule's numbers in the card's field order (what CMA-ES works with)."""
        values = [float(v) for v in values]
        genes = genes_of(genome_rule)
        if len(values) != len(genes):
            raise UsageError(f"a genome of rule {genome_rule} has {len(genes)} values, "
                             f"got {len(values)}")
        return cls(**dict(zip(genes, values, strict=True)), genome_rule=genome_rule)

    def values(self) -> list[float]:
        """The rule's numbers in the card's field order (14; v3: 19)."""
        return [getattr(self, name) for name in self.genes]

    def block_ratio(self, block: int) -> float:
        return getattr(self, f"block_{block}_ratio")

    def to_yaml(self) -> str:
        """The card's format: one `name: value` line per field, with a short gloss."""
        lines = [f"{name}: {_decimal(getattr(self, name))}  # {GENE_NOTES[name]}"
                 for name in self.genes]
        lines.append(f"genome_rule: {self.genome_rule}  # {RULE_NOTE}")
        return "\n".join(lines) + "\n"


GENE_NOTES = {**FIELD_NOTES, **V3_NOTES}


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
    if isinstance(data, dict) and (isinstance(data.get("parents"), list)
                                   or data.get("parent_genes") is not None):
        raise UsageError(f"{path}: an N-parent genome (or an N-parent merge's record): give "
                         "its models with --model (docs/MERGE.md, \"N parents\")")
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
        low, high = GENE_BOUNDS[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"{source}: {key} must be a number in [{low:g}, {high:g}], "
                             f"got {value!r}")
        if not low <= value <= high:  # no float(): a 400-digit YAML int would overflow
            raise UsageError(f"{source}: {key} = {value} is outside [{low:g}, {high:g}]")
    try:
        return Genome(**data)
    except ValidationError as exc:  # a v3 gene in a v1 or v2 genome
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UsageError(f"{source}: invalid genome ({message})") from exc


def genome_ratio(genome: Genome, info: TensorInfo) -> float:
    """The mother's share for one tensor, under the genome's rule (docs/MERGE.md).

    v2: in a decoder layer, component + block - global (each field's deviation from
    global_ratio adds up), clipped to [0, 1]; outside the layers, the component's field.
    v1: 0.4 global + 0.3 component + 0.3 block. In both, component and block fall back to
    global_ratio where a tensor has none, so a genome whose ratios all equal r gives every
    tensor r.
    """
    return ratio_of_fields(genome, info, genome.genome_rule)


def ratio_of_fields(fields, info: TensorInfo, rule: str = "v2") -> float:
    """`genome_ratio`'s arithmetic on anything with the ratio fields and `block_ratio`: a
    genome, or one parent's genes of an N-parent genome (multi_genome.py: its pull)."""
    component = getattr(fields, COMPONENT_FIELD.get(info.component, "global_ratio"))
    if rule == "v1":
        block = fields.block_ratio(info.block) if info.block is not None else fields.global_ratio
        return 0.4 * fields.global_ratio + 0.3 * component + 0.3 * block
    if info.block is None:
        return component
    deviation_sum = component + fields.block_ratio(info.block) - fields.global_ratio
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
    values = {k: round(getattr(genome, k), DECIMALS) for k in sorted(genome.genes)}
    if genome.genome_rule != "v1":
        values["genome_rule"] = genome.genome_rule
    canonical = {"genome": dict(sorted(values.items())), "settings": settings or {}}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
