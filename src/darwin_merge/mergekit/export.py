"""The closest mergekit YAML for a darwin genome (`darwin export-mergekit`).

The per-tensor ratios come from darwin's own plan (`merge/plan.py`, under the genome's
rule, v1 or v2), genome only: the mother's weight of a tensor is its ratio (0 or 1 in a
transplant zone), the father's weight 1 minus that. They are written per group of
tensors (attention, MLP, the rest) as a list with one value per decoder layer, and per
tensor name outside the layers; the file is then read back with the importer's own
parameter evaluation and compared with the plan, and the header says how many tensors
get darwin's ratio exactly and what does not carry over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import __version__
from ..arch import Taxonomy
from ..arch.rules import CLIP_KINDS, MergeMode
from ..arch.taxonomy import TensorInfo
from ..errors import UsageError
from ..genome import COMPONENT_FIELD, Genome, genome_hash, load_genome
from ..io import ModelSource
from ..io.dtypes import main_dtype
from ..io.model_ref import ModelRef, resolve_model
from ..merge.plan import MergeSettings, PlanRow, make_settings, plan_models
from ..records import MergeOptions, MergeParents, MergeRecord, file_names, read_record
from .config import config_from_dict, first_value
from .run import layer_position

# mergekit filters for the tensors of a decoder layer, in the order they are tried, each
# with the genome field that sets their ratio (darwin's component -> field, genome.py);
# one is written only where it names some tensor of its group
GROUP_FILTERS = (("per_layer", "embed_ratio"), ("self_attn", "attn_ratio"),
                 ("mlp", "ffn_ratio"), ("experts", "ffn_ratio"), ("router", "ffn_ratio"))
NORM_FILTER = "norm"  # before a group whose name a norm shares (Gemma's self_attn.q_norm)
EXACT = 1e-6
WRITTEN_DECIMALS = 12  # v1 ratios have more than 6 decimals; this drops only float noise


@dataclass(frozen=True)
class ExportSource:
    """What the export needs: the genome, the merge options and the parents' folders."""

    genome: Genome
    settings: MergeSettings
    father: Path
    mother: Path
    base: Path | None
    scan: str | None
    dtype: str | None
    origin: str


def read_source(path: str | Path, father: str | None = None, mother: str | None = None,
                base: str | None = None) -> ExportSource:
    """A RUN_DIR, a child folder, a darwin_merge.json or a genome YAML (then with
    --father/--mother); folders given here replace those the run recorded."""
    path = _report_file(Path(path))
    record = _run_record(path)
    genome = load_genome(path)  # a darwin_merge.json's genome, or the genome file
    parents = record.parents if record else MergeParents()
    options = record.options if record else MergeOptions()
    recorded = options.model_dump(exclude_unset=True)
    settings = make_settings(**{k: recorded[k] for k in MergeSettings.model_fields
                                if k in recorded})
    chosen = {"father": father or parents.father, "mother": mother or parents.mother,
              "base": base or parents.base}
    for role in ("father", "mother"):
        if chosen[role] is None:
            raise UsageError(f"{path}: a genome file names no models; give --father and "
                             "--mother (or a RUN_DIR / darwin_merge.json)")
    folders = {role: _folder(value, role) for role, value in chosen.items() if value}
    return ExportSource(genome, settings, folders["father"], folders["mother"],
                        folders.get("base"), options.scan, options.dtype,
                        str(path))


def _report_file(path: Path) -> Path:
    """A folder's darwin_merge.json (RUN_DIR/child/ or the child itself); a file as is."""
    if not path.is_dir():
        return path
    for candidate in (path / file_names.MERGE_RECORD,
                      path / file_names.CHILD_DIR / file_names.MERGE_RECORD):
        if candidate.is_file():
            return candidate
    raise UsageError(f"{path}: no {file_names.MERGE_RECORD} in it or in "
                     f"{file_names.CHILD_DIR}/ (give a RUN_DIR, a child folder, a "
                     f"{file_names.MERGE_RECORD} or a genome YAML)")


def _run_record(path: Path) -> MergeRecord | None:
    """A darwin_merge.json's record (a broken one is a one-line RecordError); None for any
    other file, a genome file (load_genome reports its errors)."""
    return read_record(MergeRecord, path) if path.name == file_names.MERGE_RECORD else None


def _folder(value, role: str) -> Path | ModelRef:
    """The model's absolute folder, or its Hub reference (named `org/name@commit` in the
    YAML, which mergekit reads as a revision)."""
    ref = resolve_model(value)
    if not ref.path.is_dir():
        raise UsageError(f"{ref.path}: the {role}'s folder is not there (give --{role} FOLDER)")
    return ref if ref.hub_id else ref.path.resolve()


# -- the YAML ---------------------------------------------------------------------------
def export_mergekit(source: ExportSource) -> str:
    """The mergekit YAML text, its header saying what is approximate."""
    if source.genome.genome_rule == "v3":
        raise UsageError("export-mergekit writes genomes of rule v1 and v2; a v3 genome's "
                         "per-parent scales and trims have no export yet (a standard "
                         "recipe's point is its own YAML: docs/MERGE.md)")
    rows = plan_models(source.father, source.mother, base=source.base, genome=source.genome,
                       settings=source.settings)
    with ModelSource(source.father) as father:
        num_layers = Taxonomy(father.config).num_layers
        dtype = source.dtype or str(main_dtype(father)).removeprefix("torch.")
    merged = [r for r in rows if r.mode != MergeMode.EXACT]
    shares = {r.name: mother_share(r) for r in merged}
    mother_weight = weight_setting(merged, shares, num_layers)
    method = "dare_ties" if source.genome.merge_method_weight >= 0.5 else "linear"
    config = _config(source, method, mother_weight, dtype)
    mismatches = _mismatches(config, merged, shares, num_layers)
    clips = sum(r.mode in CLIP_KINDS for r in merged)
    header = _header(source, method, len(merged), mismatches, clips)
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)
    return header + body


def mother_share(row: PlanRow) -> float:
    """The mother's share of a planned tensor: 0 or 1 where darwin transplants a parent."""
    share = {MergeMode.TRANSPLANT_FATHER: 0.0,
             MergeMode.TRANSPLANT_MOTHER: 1.0}.get(row.mode, row.final_ratio)
    return round(share, WRITTEN_DECIMALS)


def _group(row: PlanRow) -> str:
    return COMPONENT_FIELD.get(row.component, "global_ratio")


def weight_setting(rows: list[PlanRow], shares: dict[str, float], num_layers: int) -> list:
    """mergekit conditions giving each tensor its share: names outside the layers, then
    one per-layer list per group (attention, MLP, ...), then the rest's list."""
    outside = [r for r in rows if r.layer is None]
    inside = [r for r in rows if r.layer is not None]
    conditions = [{"filter": name, "value": share}
                  for name, share in _outside_filters(outside, inside, shares)]
    rest = _per_layer(inside, shares, "global_ratio", num_layers)
    norms = [r.name for r in inside if _group(r) == "global_ratio" and NORM_FILTER in r.name]
    for name_filter, field in GROUP_FILTERS:
        if not any(_group(r) == field and name_filter in r.name for r in inside):
            continue
        if any(name_filter in n for n in norms) and {"filter": NORM_FILTER, "value": rest} \
                not in conditions:
            conditions.append({"filter": NORM_FILTER, "value": rest})
        conditions.append({"filter": name_filter,
                           "value": _per_layer(inside, shares, field, num_layers)})
    conditions.append({"value": rest})
    return conditions


def _outside_filters(outside: list[PlanRow], inside: list[PlanRow],
                     shares: dict[str, float]) -> list[tuple[str, float]]:
    """For each tensor outside the layers, the shortest name prefix (`model.norm.`) that
    names no layer tensor and only tensors of its share; the whole name if none does."""
    filters: dict[str, float] = {}
    for row in outside:
        if any(f in row.name for f in filters):
            continue
        parts = row.name.split(".")
        prefixes = [".".join(parts[:depth]) + "." for depth in range(1, len(parts))]
        fitting = (p for p in prefixes
                   if not any(p in r.name for r in inside)
                   and all(shares[r.name] == shares[row.name] for r in outside if p in r.name))
        filters[next(fitting, row.name)] = shares[row.name]
    return list(filters.items())


def _per_layer(rows: list[PlanRow], shares: dict[str, float], field: str, num_layers: int):
    """One value per layer (the group's first tensor in it), or one number if all agree."""
    values = []
    for layer in range(num_layers):
        in_layer = [r for r in rows if r.layer == layer and _group(r) == field]
        values.append(shares[in_layer[0].name] if in_layer else None)
    known = [v for v in values if v is not None]
    filled = [known[0] if v is None else v for v in values] if known else [0.5] * num_layers
    return filled[0] if len(set(filled)) == 1 else filled


def _mirror(setting):
    if isinstance(setting, list):
        return [_mirror(entry) for entry in setting]
    if isinstance(setting, dict):
        return {**setting, "value": _mirror(setting["value"])}
    return round(1.0 - setting, WRITTEN_DECIMALS)


def _config(source: ExportSource, method: str, mother_weight: list, dtype: str) -> dict:
    genome = source.genome
    father, mother = str(source.father), str(source.mother)
    if method == "linear":
        models = [{"model": father, "parameters": {"weight": _mirror(mother_weight)}},
                  {"model": mother, "parameters": {"weight": mother_weight}}]
        return {"merge_method": "linear", "models": models, "dtype": dtype}
    mother_entry = {"model": mother, "parameters": {"weight": mother_weight,
                                                    "density": genome.density_b}}
    if source.base is None:  # darwin's base is then the father: his task vector is zero
        models, base = [mother_entry], father
    else:
        models = [{"model": father, "parameters": {"weight": _mirror(mother_weight),
                                                   "density": genome.density_a}},
                  mother_entry]
        base = str(source.base)
    return {"merge_method": "dare_ties", "base_model": base, "models": models,
            "parameters": {"normalize": source.settings.disjoint_mean, "rescale": True},
            "dtype": dtype}


def _mismatches(config: dict, rows: list[PlanRow], shares: dict[str, float],
                num_layers: int) -> list[float]:
    """|exported - darwin| for each tensor whose mother weight misses darwin's share."""
    mother = config_from_dict(config, "exported config").models[-1]  # she comes last
    gaps = []
    for r in rows:
        info = TensorInfo(r.name, r.component, r.layer, r.block, r.merge_kind)
        t = layer_position(info, num_layers)
        value = first_value([mother.parameters], "weight", r.name, t)
        gap = abs(value - shares[r.name]) if value is not None else 1.0
        if gap > EXACT:
            gaps.append(gap)
    return gaps


def _header(source: ExportSource, method: str, total: int, gaps: list[float],
            clips: int) -> str:
    genome = source.genome
    lines = [
        f"mergekit config exported by darwin {__version__} from {source.origin}",
        "APPROXIMATE: the closest mergekit config for this darwin genome, not the same merge.",
        f"genome_rule {genome.genome_rule}, genome_hash "
        f"{genome_hash(genome, source.settings)}; ratios from darwin's plan (genome only).",
        "weight of the mother = darwin's ratio (her share) per tensor group and layer; "
        "the father's = 1 - that.",
        f"{total - len(gaps)} of {total} float tensors get darwin's exact ratio" +
        (f"; {len(gaps)} differ by up to {max(gaps):.4f}" if gaps else "") + ".",
        f"transplant zones (ratio < {source.settings.transplant_low} or > "
        f"{source.settings.transplant_high}) are weights 0 or 1" +
        (", which gives the parent's tensor." if method == "linear" else
         ", which under dare_ties still adds a sparsified task vector."),
        "Not carried over:",
    ]
    notes = _not_carried(source, method)
    if clips:
        notes.append(f"{clips} clipping bounds (*_min/*_max): darwin, and darwin running this "
                     "file, take the looser of the parents' bounds; mergekit interpolates them")
    lines += [f"  - {note}" for note in notes]
    return "".join(f"# {line}\n" for line in lines)


def _not_carried(source: ExportSource, method: str) -> list[str]:
    genome, settings = source.genome, source.settings
    notes = []
    if 0.0 < genome.merge_method_weight < 1.0:
        notes.append(f"merge_method_weight {genome.merge_method_weight} blends DARE-TIES "
                     f"with linear; mergekit has no blend: written as {method} (the larger "
                     "share)")
    if source.scan is not None:
        notes.append(f"the scan's per-tensor MRI ratios (mri_trust {genome.mri_trust}, "
                     f"{source.scan}): only the genome's ratios are written")
    if method == "dare_ties":
        notes.append("transplants: darwin copies the parent's tensor bit for bit")
        notes.append("DARE's masks: darwin seeds them from the genome hash, mergekit draws "
                     "its own; recent mergekit rescales kept entries to the task vector's "
                     "L1 norm, darwin by 1/density")
        notes.append("TIES's sign vote on an exact tie: darwin keeps neither entry, mergekit "
                     "the positive one")
    notes.append("a vocabulary union of parents with different tokenizers (mergekit's "
                 "tokenizer settings are not written)")
    notes.append(f"darwin's arithmetic precision (compute_dtype {settings.compute_dtype}); "
                 "mergekit computes in `dtype`")
    return notes
