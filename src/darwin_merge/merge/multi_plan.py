"""The recipe of an N-parent genome (multi_genome.py): every tensor's shares and how it is
merged, compiled to the one merge description (merge/spec.py) that the one executor runs.

`plan_shares` is pure (tensor infos + genome -> rows), like `plan.plan_merge` for two
parents; `spec_of_shares` names the parents by the roles the caller gives (`father`,
`mother` for a pair, so that DARE's masks, seeded by role, are a v3 genome's; `model_1` ..
`model_N` for `--model`), with the base, when there is one, as the task vectors' anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from rich.table import Table

from ..arch import Taxonomy
from ..arch.rules import CLIP_KINDS, MergeMode
from ..arch.taxonomy import TensorInfo
from ..errors import UsageError
from ..inspection import dash
from ..multi_genome import MultiGenome
from .plan import MergeSettings, open_models, task_vector_step
from .spec import SHARED_DARE_SEED, Contribution, MergeSpec, StepKind, TensorStep


def require_genes_for(genome: MultiGenome, count: int) -> None:
    """One entry of genes per --model, or a one-line UsageError."""
    if len(genome.parents) != count:
        raise UsageError(f"the genome has genes for {len(genome.parents)} parents and "
                         f"{count} --model were given")


def model_roles(count: int) -> tuple[str, ...]:
    """The roles of `count` parents given as `--model`: model_1 .. model_N."""
    return tuple(f"model_{i}" for i in range(1, count + 1))


@dataclass(frozen=True)
class SharesRow:
    """One tensor of an N-parent recipe: where it sits (its TensorInfo), each parent's share
    (in the parents' order), how it is merged, and for a transplant the parent whose tensor
    it is (its index)."""

    info: TensorInfo
    shape: tuple[int, ...]
    shares: tuple[float, ...]
    mode: MergeMode
    taken: int | None = None

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def component(self) -> str:
        return self.info.component

    @property
    def layer(self) -> int | None:
        return self.info.layer

    def to_dict(self) -> dict:
        return {**self.info.to_dict(), "shape": list(self.shape), "shares": list(self.shares),
                "mode": str(self.mode), "taken": self.taken}


def plan_shares(infos: list[TensorInfo], shapes: dict[str, tuple[int, ...]],
                genome: MultiGenome, settings: MergeSettings) -> list[SharesRow]:
    """One row per tensor, in the given order (none dropped): a non-float tensor is copied;
    a parent whose share is above `transplant_high` gives its tensor; the rest are merged
    by their kind (at N = 2 from a v3 genome: the father's share 1 - r is above the
    threshold exactly where r is below 1 - transplant_high, the default transplant_low)."""
    rows = []
    for info in infos:
        shares = genome.shares(info)
        mode, taken = MergeMode(info.merge_kind), None
        if mode != MergeMode.EXACT:
            top = max(range(len(shares)), key=shares.__getitem__)
            if shares[top] > settings.transplant_high:
                mode, taken = MergeMode.TRANSPLANT_PARENT, top
        rows.append(SharesRow(info, tuple(shapes.get(info.name, ())), shares, mode, taken))
    return rows


def spec_of_shares(rows: list[SharesRow], genome: MultiGenome, settings: MergeSettings,
                   roles: tuple[str, ...], with_base: bool) -> MergeSpec:
    """The rows as the merge description: the parents under `roles` (the first the
    reference), the base after them when there is one, DARE seeded by SHARED_DARE_SEED
    (the seed of every v3 genome and of the standard recipes)."""
    require_genes_for(genome, len(roles))
    if settings.disjoint_mean:
        raise UsageError("--disjoint-mean does not apply to an N-parent genome: its own gene "
                         "disjoint_mean decides (>= 0.5: the disjoint mean)")
    labels = {role: role.replace("_", " ") for role in roles} | {"base": "the base"}
    return MergeSpec(models=roles + (("base",) if with_base else ()), reference=roles[0],
                     seed=SHARED_DARE_SEED,
                     steps=tuple(step_of_shares(r, genome, roles, with_base) for r in rows),
                     compute_dtype=getattr(torch, settings.compute_dtype), labels=labels)


def step_of_shares(row: SharesRow, genome: MultiGenome, roles: tuple[str, ...],
                   with_base: bool) -> TensorStep:
    """One row's step: copied, one parent's tensor, the looser clipping bound, or the
    parents' task vectors at weights `N share_i scale_i` (vectors: never DARE-dropped)."""
    common = dict(name=row.name, shape=row.shape, bounds=row.info.merge_kind in CLIP_KINDS)
    if row.mode == MergeMode.EXACT:
        return TensorStep(kind=StepKind.EXACT, **common)
    if row.mode == MergeMode.TRANSPLANT_PARENT:
        return TensorStep(kind=StepKind.TAKE, contributions=(Contribution(roles[row.taken]),),
                          **common)
    if row.mode in CLIP_KINDS:
        return TensorStep(kind=StepKind(row.mode), **common, contributions=tuple(
            Contribution(role, share) for role, share in zip(roles, row.shares, strict=True)))
    if row.mode in (MergeMode.DARE_TIES, MergeMode.LINEAR):
        weights, scale = genome.weights(row.shares)
        densities = tuple(p.density if row.mode == MergeMode.DARE_TIES else 1.0
                          for p in genome.parents)
        return task_vector_step(tuple(zip(roles, weights, densities, strict=True)), scale,
                                genome, with_base, common)
    raise ValueError(f"unknown merge mode {row.mode!r}")


def plan_models_multi(models: list, genome: MultiGenome, *, base=None,
                      settings: MergeSettings | None = None) -> list[SharesRow]:
    """The recipe for N model folders (`darwin plan --model ...`), without reading any
    weights; the models checked as `darwin merge --model` checks them."""
    require_genes_for(genome, len(models))
    roles = model_roles(len(models)) + (("base",) if base is not None else ())
    sources = open_models([*models, *([base] if base is not None else [])], roles)
    try:
        specs = sources[0].specs()
        return plan_shares(Taxonomy(sources[0].config).classify_all(specs),
                           {s.name: s.shape for s in specs}, genome, settings or MergeSettings())
    finally:
        for source in sources:
            source.close()


def shares_summary(rows: list[SharesRow]) -> list:
    """`darwin plan --model`'s table (one row per tensor: each parent's share, the mode
    and the parent a transplant takes) and its count of tensors per mode."""
    roles = model_roles(len(rows[0].shares)) if rows else ()
    table = Table(show_lines=False)
    for col in ("tensor", "component", "layer", "block", "kind", *roles, "mode"):
        table.add_column(col)
    modes: dict[str, int] = {}
    for r in rows:
        mode = str(r.mode) if r.taken is None else f"{r.mode} ({roles[r.taken]})"
        table.add_row(r.name, r.info.component, dash(r.info.layer), dash(r.info.block),
                      r.info.merge_kind, *(f"{s:.3f}" for s in r.shares), mode)
        modes[mode] = modes.get(mode, 0) + 1
    return [table, f"{len(rows)} tensors: " + ", ".join(f"{m} {n}" for m, n in sorted(
        modes.items()))]
