"""The standard recipes a user would otherwise pick (task arithmetic, TIES, DARE-TIES), as
the mergekit configs that make them: the baselines a child is measured against
(evolve/baselines.py, docs/EVOLVE.md "Baselines").

Each recipe takes every parent's task vector (the parent minus the base) with weight 1,
trimmed to `density` (TIES: the largest magnitudes; DARE-TIES: a random drop, rescaled),
combines them as mergekit does by default (task arithmetic and DARE-TIES: their sum after
sign election for DARE-TIES; TIES: the disjoint mean after sign election), and scales the
result by `scale` (mergekit's `lambda`). Without a base the father is the base: his
task vector is zero and the recipe moves him along the mother's.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..arch import Taxonomy
from ..genome import Genome
from ..merge.engine import ParentTensors
from ..merge.spec import SHARED_DARE_SEED
from ..records import StandardValues
from .config import MergekitConfig, config_from_dict
from .run import merge_config_state

Method = Literal["task_arithmetic", "ties", "dare_ties"]


class StandardRecipe(BaseModel):
    """One point of a standard recipe: its method, the scale of the task vectors' sum and
    the density each task vector is trimmed to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Method
    scale: float = Field(1.0, gt=0.0)
    density: float = Field(1.0, gt=0.0, le=1.0)

    @property
    def name(self) -> str:
        """`task_arithmetic_l1.0`, `ties_d0.5_l1.25`: a model's name in the tables."""
        density = "" if self.method == "task_arithmetic" else f"_d{self.density:g}"
        return f"{self.method}{density}_l{self.scale:g}"

    def words(self) -> str:
        """'TIES, density 0.5, lambda 1.25' for the reports (records.StandardValues)."""
        return StandardValues(**self.model_dump()).words()

    def mergekit_dict(self, *parents: str, base: str | None) -> dict:
        """The mergekit YAML's content for these parents, two or more (the first is the
        base when there is none): mergekit, or `darwin merge --mergekit-config`, makes the
        same recipe."""
        parameters = {"weight": 1.0}
        if self.method != "task_arithmetic":
            parameters["density"] = self.density
        models = [{"model": parent, "parameters": dict(parameters)} for parent in parents]
        if base is None:
            base, models = parents[0], models[1:]
        # every other parameter at mergekit's default (TIES: the disjoint mean; DARE-TIES:
        # rescaled, a sum), as a user's YAML with only these lines would have it
        return {"merge_method": self.method, "base_model": base, "models": models,
                "parameters": {"lambda": self.scale}}

    def genome(self) -> Genome:
        """The recipe as a genome of rule v3 (genome.py): `darwin merge --genome` of it makes
        the YAML's child (task arithmetic and TIES to the bit; DARE-TIES with other masks
        of the same density). In the search (SHARED_DARE_SEED) a DARE-TIES point's genome
        drops the entries its tuning dropped, its norm gains and biases kept whole (v3
        never drops a vector); the search queues the tuned points so (evolve/phase2.py)."""
        if self.method == "task_arithmetic":
            return Genome.task_vectors(self.scale)
        if self.method == "ties":  # mergekit's TIES: unscaled magnitude trim, disjoint mean
            return Genome.task_vectors(self.scale, trim_density=self.density,
                                       sign_election=True, disjoint_mean=True)
        return Genome.task_vectors(self.scale, dare_density=self.density, sign_election=True)

    def config(self, base: bool, parents: tuple[str, ...] = ("father", "mother")
               ) -> MergekitConfig:
        """The config in memory, its models named by the parents' roles (and base)."""
        return config_from_dict(self.mergekit_dict(*parents, base="base" if base else None),
                                self.name)

    def without_scale(self) -> tuple[str, float]:
        """What a merge before `lambda` depends on (method and density): recipes that share
        it share the merged task vectors (mergekit/run.py's memo)."""
        return self.method, self.density


class StandardMerger:
    """Standard recipes merged in memory from the parents the search holds (no disk I/O).

    Recipes that differ only in `scale` share the merged task vectors before it (kept for
    the last method and density asked for), so a grid walked density by density trims each
    task vector once per density. DARE's masks are drawn from SHARED_DARE_SEED (the seed of
    every v3 genome): every scale of one density drops the same entries, a lower density
    a subset of them, and the point's v3 genome the same; the YAML of a DARE-TIES point
    run through mergekit or `darwin merge --mergekit-config` draws other masks of the same
    density (docs/EVOLVE.md, "Baselines")."""

    def __init__(self, parents: ParentTensors | None = None, *,
                 models: dict[str, dict[str, torch.Tensor]] | None = None,
                 infos: list | None = None, config: dict | None = None):
        """The search's parents (`parents`), or N parents' tensors by role (`models`, in
        order, the base under "base" when there is one) with their infos and config."""
        if parents is not None:
            models = {"father": parents.father, "mother": parents.mother,
                      **({"base": parents.base} if parents.base is not None else {})}
            infos, config = parents.infos, parents.config
        self.tensors = models
        self.roles = tuple(role for role in models if role != "base")
        self.infos = infos
        self.num_layers = Taxonomy(config).num_layers
        self.memo_key: tuple[str, float] | None = None
        self.memo: dict[str, torch.Tensor] = {}
        self.memo_digest: str | None = None
        self.lock = threading.RLock()  # the holdout merges baselines from two threads

    def state(self, recipe: StandardRecipe) -> dict[str, torch.Tensor]:
        with self.lock:
            if recipe.without_scale() != self.memo_key:
                self.memo_key, self.memo, self.memo_digest = recipe.without_scale(), {}, None
            return merge_config_state(recipe.config("base" in self.tensors, self.roles),
                                      self.tensors, self.infos, self.num_layers,
                                      dare_key=SHARED_DARE_SEED, memo=self.memo)

    def fingerprint(self, recipe: StandardRecipe) -> str:
        """What the recipe's child depends on, hashed: the merged task vectors before the
        scale (the memo: hashed once per method and density) and the scale; the child's
        other tensors are the parents' own, the same for every recipe. Equal fingerprints,
        the same child to the bit (with task vectors that never share a tensor, TIES and
        DARE-TIES at density 1 are task arithmetic)."""
        with self.lock:
            if recipe.without_scale() != self.memo_key or not self.memo:
                self.state(recipe)
            if self.memo_digest is None:
                self.memo_digest = tensors_digest(self.memo)
            return hashlib.sha256(f"{self.memo_digest}:{recipe.scale!r}".encode()).hexdigest()


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """Every tensor's name, dtype, shape and bytes, hashed (sha256: the fastest of
    hashlib's on CPUs with SHA instructions, 1.3 GB/s here)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
