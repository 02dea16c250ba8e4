"""The merge recipe: for every tensor, its ratio and how it will be merged.

`plan_merge` is pure (tensor infos + genome + scan ratios -> rows); `plan_models`
opens the parents, checks that they can be merged and plans them. The same rows
drive the real merge, the in-memory merge of the search and `darwin plan`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.table import Table

from ..arch import Taxonomy
from ..arch.rules import CLIP_KINDS, TRANSPLANTS, MergeMode
from ..arch.taxonomy import TensorInfo
from ..errors import IncompatibleModelsError, ModelFormatError, UsageError, validation_line
from ..genome import TRANSPLANT_HIGH, TRANSPLANT_LOW, Genome, genome_ratio
from ..inspection import dash, require_mergeable
from ..io import ModelSource
from ..records import ScanRecord, read_record
from .spec import (
    MERGEKIT_TIE_SIGN,
    SHARED_DARE_SEED,
    Contribution,
    MergeSpec,
    StepKind,
    TensorStep,
    Trim,
)

PARENT_LABELS = {"father": "the father", "mother": "the mother", "base": "the base"}


class MergeSettings(BaseModel):
    """Options of the merge that change the child (all part of the genome hash)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transplant_low: float = Field(TRANSPLANT_LOW, ge=0.0, le=1.0)
    transplant_high: float = Field(TRANSPLANT_HIGH, ge=0.0, le=1.0)
    disjoint_mean: bool = False
    compute_dtype: Literal["float32", "float64"] = "float32"

    @model_validator(mode="after")
    def _ordered(self) -> MergeSettings:
        if self.transplant_low > self.transplant_high:
            raise ValueError("transplant_low must not exceed transplant_high")
        return self


@dataclass(frozen=True)
class PlanRow:
    """One tensor of the recipe (the per-tensor row of darwin_merge.json)."""

    name: str
    component: str
    layer: int | None
    block: int | None
    merge_kind: str
    shape: tuple[int, ...]
    genome_ratio: float
    mri_ratio: float | None
    final_ratio: float
    mode: MergeMode

    def to_dict(self) -> dict:
        row = asdict(self)
        row["shape"] = list(self.shape)
        return row

    @property
    def info(self) -> TensorInfo:
        return TensorInfo(self.name, self.component, self.layer, self.block, self.merge_kind)


def final_ratio(genome_share: float, mri_ratio: float | None, mri_trust: float) -> float:
    """mri * trust + genome * (1 - trust); the genome alone without a scan."""
    if mri_ratio is None:
        return genome_share
    return mri_ratio * mri_trust + genome_share * (1.0 - mri_trust)


def mode_of(merge_kind: MergeMode, ratio: float, settings: MergeSettings) -> MergeMode:
    """How a tensor is merged: exact tensors are copied, extremes transplanted."""
    if merge_kind == MergeMode.EXACT:
        return MergeMode.EXACT
    return transplant_mode(ratio, settings.transplant_low, settings.transplant_high) or \
        MergeMode(merge_kind)


def transplant_mode(ratio: float, low: float, high: float) -> MergeMode | None:
    """The father's tensor below `low`, the mother's above `high`, else None."""
    if ratio < low:
        return MergeMode.TRANSPLANT_FATHER
    if ratio > high:
        return MergeMode.TRANSPLANT_MOTHER
    return None


def plan_merge(infos: list[TensorInfo], shapes: dict[str, tuple[int, ...]], genome: Genome,
               settings: MergeSettings, mri_ratios: dict[str, float] | None = None
               ) -> list[PlanRow]:
    """One row per tensor, in the given order; every tensor gets a row (none dropped)."""
    if mri_ratios is not None:
        missing = [i.name for i in infos if i.name not in mri_ratios]
        if missing:
            raise UsageError(f"the scan has no mri_ratio for {len(missing)} tensor(s) of the "
                             f"parents (e.g. {missing[0]}); was it made for these models?")
    rows = []
    for info in infos:
        share = genome_ratio(genome, info)
        mri = None if mri_ratios is None else mri_ratios[info.name]
        ratio = final_ratio(share, mri, genome.mri_trust)
        rows.append(PlanRow(info.name, info.component, info.layer, info.block, info.merge_kind,
                            tuple(shapes.get(info.name, ())), share, mri, ratio,
                            mode_of(info.merge_kind, ratio, settings)))
    return rows


def spec_of_plan(rows: list[PlanRow], genome: Genome, settings: MergeSettings, key: str,
                 with_base: bool) -> MergeSpec:
    """The plan as the merge description the executor runs (merge/spec.py): models
    father, mother (and base), the father the reference, DARE seeded by the genome hash
    (rule v3: SHARED_DARE_SEED, the masks of the search's standard recipes)."""
    models = ("father", "mother") + (("base",) if with_base else ())
    if genome.genome_rule == "v3" and settings.disjoint_mean:
        raise UsageError("--disjoint-mean does not apply to a genome of rule v3: its own "
                         "gene disjoint_mean decides (>= 0.5: the disjoint mean)")
    seed = SHARED_DARE_SEED if genome.genome_rule == "v3" else key
    return MergeSpec(models=models, reference="father", seed=seed,
                     steps=tuple(step_of_row(r, genome, settings, with_base) for r in rows),
                     compute_dtype=getattr(torch, settings.compute_dtype),  # a Literal
                     labels=PARENT_LABELS)


def step_of_row(row: PlanRow, genome: Genome, settings: MergeSettings, with_base: bool
                ) -> TensorStep:
    """One row's step: copied, transplanted, the looser clipping bound, interpolated at
    the mother's share, or DARE-TIES (blended with the interpolation by
    merge_method_weight); the base, when there is one, only as the task vectors' anchor."""
    bounds = row.merge_kind in CLIP_KINDS
    common = dict(name=row.name, shape=row.shape, bounds=bounds)
    r = row.final_ratio
    if row.mode == MergeMode.EXACT:
        return TensorStep(kind=StepKind.EXACT, **common)
    if row.mode in TRANSPLANTS:
        parent = "father" if row.mode == MergeMode.TRANSPLANT_FATHER else "mother"
        return TensorStep(kind=StepKind.TAKE, contributions=(Contribution(parent),), **common)
    pair = (Contribution("father", 1.0 - r), Contribution("mother", r))
    if row.mode in CLIP_KINDS:
        return TensorStep(kind=StepKind(row.mode), contributions=pair, **common)
    if row.mode in (MergeMode.DARE_TIES, MergeMode.LINEAR) and genome.genome_rule == "v3":
        # under v3 every blended tensor is a task-vector merge (the standard recipes', so
        # that they are points of the genome); vectors (norm gains, biases) are not DARE-
        # dropped: a random drop rescaled by 1 / density breaks a gain
        return task_vector_step_v3(r, genome, with_base, common,
                                   dare=row.mode == MergeMode.DARE_TIES)
    if row.mode == MergeMode.LINEAR:
        return TensorStep(kind=StepKind.INTERPOLATE, contributions=pair, mean=True, **common)
    if row.mode == MergeMode.DARE_TIES:
        return TensorStep(
            kind=StepKind.TASK_VECTORS, base="base" if with_base else None,
            contributions=(Contribution("father", 1.0 - r, genome.density_a, Trim.DARE),
                           Contribution("mother", r, genome.density_b, Trim.DARE)),
            sign_election=True, mean=settings.disjoint_mean,
            task_vector_share=genome.merge_method_weight, **common)
    raise ValueError(f"unknown merge mode {row.mode!r}")


def v3_weights(ratio: float, genome: Genome) -> tuple[tuple[float, float], float]:
    """A v3 tensor's (father, mother) task-vector weights and the step's scale: 2 (1 -
    ratio) scale_a and 2 ratio scale_b divided by the larger scale, which is the scale
    (both scales 0: the base, the father without one, whatever the weights)."""
    weights = (2.0 * (1.0 - ratio) * genome.scale_a, 2.0 * ratio * genome.scale_b)
    scale = max(genome.scale_a, genome.scale_b)
    if scale > 0.0:
        return (weights[0] / scale, weights[1] / scale), scale
    return (2.0 * (1.0 - ratio), 2.0 * ratio), scale


def task_vector_step_v3(ratio: float, genome: Genome, with_base: bool, common: dict,
                        dare: bool = True) -> TensorStep:
    """A blended tensor under genome rule v3 (docs/MERGE.md): the father's task vector at
    weight 2 (1 - ratio) scale_a, the mother's at 2 ratio scale_b (`v3_weights`), as
    `task_vector_step` merges them. Without `dare` (a vector) the densities are 1."""
    weights, scale = v3_weights(ratio, genome)
    densities = (genome.density_a, genome.density_b) if dare else (1.0, 1.0)
    return task_vector_step(tuple(zip(("father", "mother"), weights, densities, strict=True)),
                            scale, genome, with_base, common)


def task_vector_step(parts: tuple[tuple[str, float, float], ...], scale: float, genes,
                     with_base: bool, common: dict) -> TensorStep:
    """A task-vector step of rule v3, for two parents or N: each (model, weight, density)
    part's task vector trimmed to its largest `genes.trim_density` and then DARE-dropped to
    its density (rescaled), summed after a sign election (mergekit's tie sign) or not, as the
    disjoint mean or a sum, times `scale`, blended with the parents' weighted mean by
    `genes.merge_method_weight`. The weights come divided by the scale, so that equal shares
    with equal scales give weights 1: mergekit's task arithmetic or TIES to the bit. `genes`:
    a v3 Genome or a MultiGenome (the same four shared genes)."""
    def contribution(model: str, weight: float, density: float) -> Contribution:
        return Contribution(model, weight, density, Trim.DARE if density < 1.0 else Trim.NONE,
                            keep_largest=genes.trim_density)

    return TensorStep(
        kind=StepKind.TASK_VECTORS, base="base" if with_base else None,
        contributions=tuple(contribution(*part) for part in parts),
        sign_election=genes.elects_signs, tie_sign=MERGEKIT_TIE_SIGN,
        mean=genes.takes_disjoint_mean, rescale=True, scale=scale,
        task_vector_share=genes.merge_method_weight, **common)


def load_scan_ratios(path: str | Path) -> dict[str, float]:
    """The mother's share per tensor that a scan file prescribes; a file that is not a
    darwin scan.json (unreadable, not JSON, a ratio missing or outside [0, 1], no per-layer
    table) is refused with a RecordError (a UsageError) naming the file and what is wrong.
    A SCAN_DIR stands for its scan.json."""
    path = Path(path)
    if path.is_dir():
        path = path / ScanRecord.file_name
    return read_record(ScanRecord, path).mri_ratios()


def open_parents(father: str | Path, mother: str | Path, base: str | Path | None = None,
                 *, allow_pickle: bool = False, trust_remote_code: bool = False,
                 align_vocab: bool = False
                 ) -> tuple[ModelSource, ModelSource, ModelSource | None]:
    """Open the parents and refuse pairs (or a base) that cannot be merged.

    `allow_pickle` and `trust_remote_code` are the user's opt-ins for untrusted folders
    (see ModelSource); even then only weights are read, never code run. `align_vocab`
    accepts a mother whose vocabulary differs from the father's (the streaming merge
    aligns the rows); a base must always share the father's.
    """
    roles = ("father", "mother") + (("base",) if base is not None else ())
    sources = open_models([father, mother] + ([base] if base is not None else []), roles,
                          allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                          align_vocab=("mother",) if align_vocab else ())
    return sources[0], sources[1], (sources[2] if base is not None else None)


def open_models(paths: list, roles: tuple[str, ...], *, allow_pickle: bool = False,
                trust_remote_code: bool = False, align_vocab: tuple[str, ...] = ()
                ) -> list[ModelSource]:
    """Open models (two parents, N parents, a base after them) and refuse any that cannot
    be merged with the first: another architecture, other tensors or shapes, another
    vocabulary (unless its role is in `align_vocab`), float8 weights. Each is named by its
    role in the one-line error; nothing is left open when one is refused."""
    trust = dict(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    sources: list[ModelSource] = []
    try:
        for path in paths:
            sources.append(ModelSource(path, **trust))
        types = [str(s.config.get("model_type")) for s in sources]
        if len(set(types)) > 1:
            raise IncompatibleModelsError("the parents have different architectures ("
                                          + " vs ".join(types) + "); Darwin merges models of "
                                          "one architecture only")
        for role, source in zip(roles[1:], sources[1:], strict=True):
            require_mergeable(sources[0], source, role, role in align_vocab)
        for source in sources:
            bad = [n for n in source.names if source.spec(n).dtype.startswith("F8")]
            if bad:
                raise ModelFormatError(f"{source.path}: float8 tensors ({bad[0]}) are not "
                                       "supported; convert the model to bfloat16 or float32 "
                                       "first")
    except BaseException:
        for source in sources:
            source.close()
        raise
    return sources


def plan_models(father: str | Path, mother: str | Path, *, base: str | Path | None = None,
                genome: Genome | None = None, scan: str | Path | None = None,
                settings: MergeSettings | None = None) -> list[PlanRow]:
    """The recipe for two model folders, without reading any weights."""
    a, b, w = open_parents(father, mother, base)
    try:
        specs = a.specs()
        infos = Taxonomy(a.config).classify_all(specs)
        ratios = load_scan_ratios(scan) if scan is not None else None
        return plan_merge(infos, {s.name: s.shape for s in specs}, genome or Genome(),
                          settings or MergeSettings(), ratios)
    finally:
        for source in (a, b, w):
            if source is not None:
                source.close()


def make_settings(**options) -> MergeSettings:
    """MergeSettings from user options; a bad value is a one-line UsageError."""
    from pydantic import ValidationError

    try:
        return MergeSettings(**options)
    except ValidationError as exc:
        raise UsageError(f"merge option {validation_line(exc, 'settings')}") from exc


def parse_size(text: str) -> int:
    """'500MB', '2GB', '100KB' or a byte count -> bytes (decimal units, like transformers)."""
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    clean = text.strip().upper()
    for unit, factor in units.items():
        if clean.endswith(unit) and clean[:-len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(clean[:-len(unit)]) * factor)
    if clean.isdigit():
        return int(clean)
    raise UsageError(f"cannot read the size {text!r} (use e.g. 500MB, 2GB)")


def plan_to_csv(rows: list[PlanRow]) -> str:
    """The recipe as CSV, one line per tensor (empty cells for None)."""
    import csv
    import io

    buffer = io.StringIO()
    fields = list(PlanRow.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        record = row.to_dict()
        record["shape"] = "x".join(map(str, row.shape))
        writer.writerow({k: "" if v is None else v for k, v in record.items()})
    return buffer.getvalue()


def plan_summary(rows: list[PlanRow], with_scan: bool) -> list:
    """`darwin plan`'s table (one row per tensor) and its count of tensors per mode."""
    table = Table(show_lines=False)
    for col in ("tensor", "component", "layer", "block", "kind", "genome", "mri", "final",
                "mode"):
        table.add_column(col)
    for r in rows:
        mri = "-" if r.mri_ratio is None else f"{r.mri_ratio:.3f}"
        table.add_row(r.name, r.component, dash(r.layer), dash(r.block), r.merge_kind,
                      f"{r.genome_ratio:.3f}", mri, f"{r.final_ratio:.3f}", r.mode)
    modes: dict[str, int] = {}
    for r in rows:
        modes[r.mode] = modes.get(r.mode, 0) + 1
    items: list = [table, f"{len(rows)} tensors: "
                   + ", ".join(f"{m} {n}" for m, n in sorted(modes.items()))]
    if not with_scan:
        items.append("no scan given: the genome alone decides every ratio")
    return items


def parent_of(rows: list[PlanRow]) -> tuple[str, float | None]:
    """Where a set of tensors goes: (`father` or `mother` when every one is that parent's
    transplant, `copied` when every one is an exact copy, else `blend`, with the blended
    tensors' mean ratio)."""
    modes = {r.mode for r in rows if r.mode != MergeMode.EXACT}
    if not modes:
        return "copied", None
    if modes in ({MergeMode.TRANSPLANT_FATHER}, {MergeMode.TRANSPLANT_MOTHER}):
        return str(modes.pop()).removeprefix("transplant_"), None
    blended = [r.final_ratio for r in rows if r.mode != MergeMode.EXACT]
    return "blend", sum(blended) / len(blended)


def plan_by_layer(rows: list[PlanRow]) -> list[str]:
    """The plan in a few lines a person reads at once: per decoder layer, where each
    component's tensors go (`parent_of`; a blend with its mean ratio, a range over the
    line's layers), consecutive layers that go the same way on one line, then the tensors
    outside the layers."""
    def verdicts(selected) -> dict[str, tuple[str, float | None]]:
        kinds: dict[str, list[PlanRow]] = {}
        for r in selected:
            kinds.setdefault(r.component, []).append(r)
        return {kind: parent_of(kinds[kind]) for kind in sorted(kinds)}

    def text(run: list[dict]) -> str:
        parts = []
        for kind, (where, _) in run[0].items():
            ratios = [v[kind][1] for v in run if v[kind][1] is not None]
            low, high = min(ratios, default=0.0), max(ratios, default=0.0)
            share = "" if where != "blend" else (
                f" {low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f" {low:.2f}-{high:.2f}")
            parts.append(f"{kind} {where}{share}")
        return ", ".join(parts)

    runs: list[tuple[int, int, list[dict]]] = []
    for layer in sorted({r.layer for r in rows if r.layer is not None}):
        found = verdicts([r for r in rows if r.layer == layer])
        shape = {k: w for k, (w, _) in found.items()}
        if runs and runs[-1][1] == layer - 1 and shape == {
                k: w for k, (w, _) in runs[-1][2][0].items()}:
            runs[-1] = (runs[-1][0], layer, runs[-1][2] + [found])
        else:
            runs.append((layer, layer, [found]))
    lines = [f"{'layer' if a == b else 'layers'} {a if a == b else f'{a}-{b}'}: {text(run)}"
             for a, b, run in runs]
    outside = [r for r in rows if r.layer is None]
    if outside:
        lines.append(f"outside the layers: {text([verdicts(outside)])}")
    return lines
