"""A genome for N parents: genome rule v3 read over any number of models (docs/MERGE.md,
"N parents").

Each parent has its own genes: the ten ratio fields of the 14-value genome, read as that
parent's *pull* on a tensor (the same arithmetic, `genome.ratio_of_fields`: component +
block - global in a decoder layer, clipped to [0, 1]; the component's field outside),
the density its task vector is DARE-dropped to, and its task-vector scale. A tensor's
*shares* are the pulls divided by their sum (equal shares where every pull is 0); parent
i's task vector gets the weight `N * share_i * scale_i`, and a parent whose share passes
the transplant threshold gives the tensor whole. Shared by all parents: TIES's magnitude
trim, the sign-election and disjoint-mean switches, and `merge_method_weight` (the blend
with the parents' weighted mean), as in rule v3.

At N = 2 this is rule v3: a two-parent v3 genome is the N-parent genome whose father pulls
`1 - ratio` where the mother pulls `ratio` (`MultiGenome.from_pair`), shares (1 - r, r),
weights `2 (1 - r) scale_a` and `2 r scale_b`. The standard recipes over N models are its
points (`MultiGenome.task_vectors`): every pull equal, every scale the recipe's lambda.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from .arch.taxonomy import NUM_BLOCKS, TensorInfo
from .errors import UsageError, validation_line
from .genome import DECIMALS, GENES, SCALE_MAX, SWITCH_ON, Genome, ratio_of_fields

# A parent's pull fields: the genome's ratio fields, in the card's order.
PULL_FIELDS = tuple(name for name in GENES if name.endswith("_ratio"))


def _share(default: float):
    return Field(default=default, ge=0.0, le=1.0)


# the ten pull fields, declared from the genome's own names (one spelling of each)
_Pulls = create_model("_Pulls", __config__=ConfigDict(frozen=True, extra="forbid"),
                      **{name: (float, _share(0.5)) for name in PULL_FIELDS})


class ParentGenes(_Pulls):
    """One parent's genes in an N-parent genome: its pull per component and block (the
    genome's ratio fields, `global_ratio` .. `block_5_ratio`, read as `genome_ratio` reads
    them), its DARE density, its scale."""

    density: float = _share(1.0)
    scale: float = Field(1.0, ge=0.0, le=SCALE_MAX)

    @field_validator("*", mode="after")
    @classmethod
    def _rounded(cls, value: float) -> float:
        return round(float(value), DECIMALS)

    def block_ratio(self, block: int) -> float:
        return getattr(self, f"block_{block}_ratio")

    def pull(self, info: TensorInfo) -> float:
        """How much of the tensor this parent asks for, in [0, 1] (before the shares)."""
        return ratio_of_fields(self, info)


class MultiGenome(BaseModel):
    """Genome rule v3 over N >= 2 parents (the module's docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    parents: tuple[ParentGenes, ...] = Field(min_length=2)
    trim_density: float = _share(1.0)
    sign_election: float = _share(0.0)
    disjoint_mean: float = _share(0.0)
    merge_method_weight: float = _share(1.0)
    genome_rule: Literal["v3"] = "v3"

    @property
    def elects_signs(self) -> bool:
        return self.sign_election >= SWITCH_ON

    @property
    def takes_disjoint_mean(self) -> bool:
        return self.disjoint_mean >= SWITCH_ON

    @property
    def scale(self) -> float:
        """The merge step's lambda: the largest parent scale (weights are divided by it)."""
        return max(p.scale for p in self.parents)

    def shares(self, info: TensorInfo) -> tuple[float, ...]:
        """Each parent's share of the tensor: its pull over the pulls' sum (equal shares
        when every pull is 0); exactly the pulls when they already sum to 1 (N = 2 from a
        v3 genome: the father's 1 - r beside the mother's r)."""
        pulls = tuple(p.pull(info) for p in self.parents)
        total = sum(pulls)
        if total <= 0.0:
            return (1.0 / len(pulls),) * len(pulls)
        if abs(total - 1.0) < 1e-12:
            return pulls
        return tuple(u / total for u in pulls)

    def weights(self, shares: tuple[float, ...]) -> tuple[tuple[float, ...], float]:
        """Each parent's task-vector weight `N share_i scale_i`, divided by the step's scale
        (the largest parent scale), and that scale; every scale 0: the undivided N shares
        (the base, whatever the weights; without a base the first parent)."""
        n = len(self.parents)
        weights = tuple(n * s * p.scale for s, p in zip(shares, self.parents, strict=True))
        scale = self.scale
        if scale > 0.0:
            return tuple(w / scale for w in weights), scale
        return tuple(n * s for s in shares), scale

    @classmethod
    def from_pair(cls, genome: Genome) -> MultiGenome:
        """A two-parent genome of rule v3 as the N-parent rule reads it: the mother pulls
        each ratio field's value, the father its complement (so his pull is 1 - r where
        hers is r, on every tensor), each with its density and scale. The scan's ratios
        (mri_trust) have no N-parent reading yet: a genome that trusts a scan is refused."""
        if genome.genome_rule != "v3":
            raise UsageError(f"only a genome of rule v3 has an N-parent reading (this one is "
                             f"{genome.genome_rule}; `Genome.as_v3` reads a v2 genome so)")
        mother = {name: getattr(genome, name) for name in PULL_FIELDS}
        father = {name: round(1.0 - value, DECIMALS) for name, value in mother.items()}
        return cls(parents=(ParentGenes(**father, density=genome.density_a,
                                        scale=genome.scale_a),
                            ParentGenes(**mother, density=genome.density_b,
                                        scale=genome.scale_b)),
                   trim_density=genome.trim_density, sign_election=genome.sign_election,
                   disjoint_mean=genome.disjoint_mean,
                   merge_method_weight=genome.merge_method_weight)

    @classmethod
    def task_vectors(cls, parents: int, scale: float, trim_density: float = 1.0,
                     dare_density: float = 1.0, sign_election: bool = False,
                     disjoint_mean: bool = False) -> MultiGenome:
        """A standard recipe over `parents` models (mergekit/standard.py): equal shares,
        every task vector at weight `scale`, trimmed, summed with or without sign election,
        as a sum or the disjoint mean, no linear part."""
        one = ParentGenes(density=dare_density, scale=scale)
        return cls(parents=(one,) * parents, trim_density=trim_density,
                   sign_election=float(sign_election), disjoint_mean=float(disjoint_mean))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def multi_genome_from_dict(data: dict, source: str = "genome") -> MultiGenome:
    """An N-parent genome from a mapping (a YAML file's content); a bad one is a one-line
    UsageError naming `source` and the field."""
    try:
        return MultiGenome(**data)
    except ValidationError as exc:
        raise UsageError(f"{source}: {validation_line(exc, 'genome')}") from exc
    except TypeError as exc:
        raise UsageError(f"{source}: an N-parent genome is a mapping with `parents:`") from exc


def load_multi_genome(path: str | Path) -> MultiGenome:
    """An N-parent genome file (YAML with a `parents:` list), or the darwin_merge.json of an
    N-parent merge (its genome: `darwin merge --model ... --genome CHILD/darwin_merge.json`
    makes that child again)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read the genome ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("parent_genes"), list):
        # an N-parent merge's darwin_merge.json: its shared genes and each parent's
        data = {**{k: v for k, v in data.get("genome", {}).items() if k != "genome_rule"},
                "parents": data["parent_genes"]}
    if not isinstance(data, dict) or not isinstance(data.get("parents"), list):
        raise UsageError(f"{path}: an N-parent genome is a mapping with a `parents:` list "
                         "(one entry of genes per --model), or an N-parent merge's "
                         "darwin_merge.json")
    return multi_genome_from_dict(data, str(path))


assert len(PULL_FIELDS) == 4 + NUM_BLOCKS  # global, attn, ffn, embed and the blocks
