"""The closest mergekit YAML for a darwin genome (`darwin export-mergekit`).

The per-tensor ratios come from darwin's own plan (`merge/plan.py`, under the genome's
rule), genome only: under v1 and v2 the mother's weight of a tensor is its ratio (0 or 1 in
a transplant zone), the father's weight 1 minus that; under v3 each parent's task-vector
weight (its scale) under mergekit's `lambda` (`parent_weights`). They are written per group of
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
from ..errors import UsageError
from ..genome import COMPONENT_FIELD, Genome, genome_hash, load_genome
from ..io import ModelSource
from ..io.dtypes import main_dtype
from ..io.model_ref import ModelRef, resolve_model
from ..merge.plan import MergeSettings, PlanRow, make_settings, plan_models, v3_weights
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
    path = report_file(Path(path))
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
    folders = {role: yaml_model(value, role) for role, value in chosen.items() if value}
    return ExportSource(genome, settings, folders["father"], folders["mother"],
                        folders.get("base"), options.scan, options.dtype,
                        str(path))


def report_file(path: Path) -> Path:
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


def yaml_model(value, role: str) -> Path | ModelRef:
    """The model's absolute folder, or its Hub reference (named `org/name@commit` in the
    YAML, which mergekit reads as a revision)."""
    ref = resolve_model(value)
    if not ref.path.is_dir():
        raise UsageError(f"{ref.path}: the {role}'s folder is not there (give --{role} FOLDER)")
    return ref if ref.hub_id else ref.path.resolve()


# -- the YAML ---------------------------------------------------------------------------
def export_mergekit(source: ExportSource) -> str:
    """The mergekit YAML text, its header saying what is approximate."""
    rows = plan_models(source.father, source.mother, base=source.base, genome=source.genome,
                       settings=source.settings)
    with ModelSource(source.father) as father:
        num_layers = Taxonomy(father.config).num_layers
        dtype = source.dtype or str(main_dtype(father)).removeprefix("torch.")
    merged = [r for r in rows if r.mode != MergeMode.EXACT]
    if source.genome.genome_rule == "v3":
        method = v3_method(source.genome)
        weights = {r.name: parent_weights(r, source.genome) for r in merged}
        config = _config_v3(source, method, [
            weight_setting(merged, {n: w[i] for n, w in weights.items()}, num_layers)
            for i in (0, 1)], dtype)
    else:
        shares = {r.name: mother_share(r) for r in merged}
        weights = {name: (None, share) for name, share in shares.items()}
        method = "dare_ties" if source.genome.merge_method_weight >= 0.5 else "linear"
        config = _config(source, method, weight_setting(merged, shares, num_layers), dtype)
    mismatches = _mismatches(config, merged, weights, num_layers)
    clips = sum(r.mode in CLIP_KINDS for r in merged)
    header = _header(source, method, len(merged), mismatches, clips)
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)
    return header + body


def v3_method(genome: Genome) -> str:
    """The mergekit method closest to a v3 genome: TIES when it elects signs and trims by
    magnitude, DARE-TIES when it elects signs without a trim, task arithmetic without
    sign election."""
    if not genome.elects_signs:
        return "task_arithmetic"
    return "ties" if genome.trim_density < 1.0 else "dare_ties"


def parent_weights(row: PlanRow, genome: Genome) -> tuple[float, float]:
    """A tensor's (father, mother) task-vector weights under `lambda` = the larger scale
    (merge/plan.py's v3_weights); in a transplant zone the transplanted parent at 1 / lambda
    (base + its task vector: its own tensor) and the other at 0."""
    (father, mother), scale = v3_weights(row.final_ratio, genome)
    whole = 1.0 / scale if scale > 0.0 else 1.0
    if row.mode == MergeMode.TRANSPLANT_FATHER:
        father, mother = whole, 0.0
    elif row.mode == MergeMode.TRANSPLANT_MOTHER:
        father, mother = 0.0, whole
    return round(father, WRITTEN_DECIMALS), round(mother, WRITTEN_DECIMALS)


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


def _mismatches(config: dict, rows: list[PlanRow], weights: dict[str, tuple],
                num_layers: int) -> list[float]:
    """|exported - darwin| for each tensor whose weights, read back as the importer reads
    them, miss darwin's: (father, mother) per tensor, the father's None where only the
    mother's is darwin's own (v1/v2: the father's is 1 minus hers) or he is the base."""
    models = config_from_dict(config, "exported config").models
    entries = (models[0] if len(models) == 2 else None, models[-1])  # she comes last
    return weight_gaps(entries, rows, weights, num_layers)


def weight_gaps(entries: tuple, rows: list, weights: dict[str, tuple],
                num_layers: int) -> list[float]:
    """|exported - darwin| for each tensor (a plan's rows: two parents' or N's) whose
    weights, read back from the config's model `entries` (aligned with each tensor's
    `weights`; None where a parent is not written) as the importer reads them, miss
    darwin's; an expected weight of None is not darwin's own and is not compared."""
    gaps = []
    for r in rows:
        t = layer_position(r.info, num_layers)
        gap = 0.0
        for entry, expected in zip(entries, weights[r.name], strict=True):
            if expected is None or entry is None:
                continue
            value = first_value([entry.parameters], "weight", r.name, t)
            gap = max(gap, abs(value - expected) if value is not None else 1.0)
        if gap > EXACT:
            gaps.append(gap)
    return gaps


def _config_v3(source: ExportSource, method: str, settings: list, dtype: str) -> dict:
    """A v3 genome's config: each parent's task-vector weights (`settings`: father's,
    mother's), lambda the larger scale; the father is the base when there is none."""
    genome = source.genome
    densities = {"ties": (genome.trim_density,) * 2,
                 "dare_ties": (genome.density_a, genome.density_b)}.get(method)
    return task_vector_config(method, (source.father, source.mother), settings, densities,
                              source.base, genome.takes_disjoint_mean,
                              max(genome.scale_a, genome.scale_b), dtype)


def task_vector_config(method: str, parents: tuple, settings: list, densities: tuple | None,
                       base, normalize: bool, scale: float, dtype: str) -> dict:
    """A task-vector recipe's config over two parents or N: each parent's weights
    (`settings`, in order) and density (None: the method has none), lambda `scale`; the
    first parent is the base when there is none (its task vector is zero: not written)."""
    models = []
    for index, (path, weight) in enumerate(zip(parents, settings, strict=True)):
        parameters = {"weight": weight}
        if densities is not None:
            parameters["density"] = densities[index]
        models.append({"model": str(path), "parameters": parameters})
    if base is None:
        base, models = parents[0], models[1:]
    parameters = {"normalize": normalize, "lambda": scale}
    if method == "dare_ties":
        parameters["rescale"] = True
    return {"merge_method": method, "base_model": str(base), "models": models,
            "parameters": parameters, "dtype": dtype}


def _header(source: ExportSource, method: str, total: int, gaps: list[float],
            clips: int) -> str:
    genome = source.genome
    lines = [
        f"mergekit config exported by darwin {__version__} from {source.origin}",
        "APPROXIMATE: the closest mergekit config for this darwin genome, not the same merge.",
        f"genome_rule {genome.genome_rule}, genome_hash "
        f"{genome_hash(genome, source.settings)}; ratios from darwin's plan (genome only).",
        *_weight_lines(genome),
        f"{total - len(gaps)} of {total} float tensors get darwin's exact " +
        ("weights" if genome.genome_rule == "v3" else "ratio") +
        (f"; {len(gaps)} differ by up to {max(gaps):.4f}" if gaps else "") + ".",
        f"transplant zones (ratio < {source.settings.transplant_low} or > "
        f"{source.settings.transplant_high}) are weights 0 or 1" +
        (", which gives the parent's tensor." if method == "linear" else
         f", which under {method} still adds a {'trimmed' if method == 'ties' else 'sparsified'}"
         " task vector." if genome.genome_rule != "v3" else
         ": the parent at 1 / lambda and the other at 0 (its tensor, before any trim)."),
        "Not carried over:",
    ]
    notes = _not_carried(source, method)
    if clips:
        notes.append(f"{clips} clipping bounds (*_min/*_max): darwin, and darwin running this "
                     "file, take the looser of the parents' bounds; mergekit interpolates them")
    lines += [f"  - {note}" for note in notes]
    return "".join(f"# {line}\n" for line in lines)


def _weight_lines(genome: Genome) -> list[str]:
    if genome.genome_rule != "v3":
        return ["weight of the mother = darwin's ratio (her share) per tensor group and layer; "
                "the father's = 1 - that."]
    return ["per tensor group and layer, the father's task-vector weight = 2 (1 - r) scale_a "
            "/ lambda and the mother's = 2 r scale_b / lambda (r: darwin's ratio, her share), "
            "lambda = the larger scale (merge/plan.py, task_vector_step_v3)."]


def _not_carried_v3(genome: Genome, method: str) -> list[str]:
    return not_carried_task_vectors(method, {"density_a": genome.density_a,
                                             "density_b": genome.density_b},
                                    genome.trim_density)


def not_carried_task_vectors(method: str, densities: dict[str, float], trim_density: float
                             ) -> list[str]:
    """What a task-vector genome (v3, or N parents) loses in `method`: DARE's drop
    (`densities`, by gene name) where the method has none, DARE's masks, the trim."""
    notes = []
    if method != "dare_ties" and min(densities.values()) < 1.0:
        named = ", ".join(f"{name} {value}" for name, value in densities.items())
        notes.append(f"DARE's drop ({named}): {method} has no random drop, written without it")
    if method == "dare_ties":
        notes.append("DARE's masks: darwin draws them from its own seed (SHARED_DARE_SEED), "
                     "mergekit draws its own; darwin never drops entries of vectors (norms, "
                     "biases)")
    if method == "task_arithmetic" and trim_density < 1.0:
        notes.append(f"the magnitude trim (trim_density {trim_density}): "
                     "task_arithmetic has none, written without it")
    return notes


def _not_carried(source: ExportSource, method: str) -> list[str]:
    genome, settings = source.genome, source.settings
    v3 = genome.genome_rule == "v3"
    notes = _not_carried_v3(genome, method) if v3 else []
    if 0.0 < genome.merge_method_weight < 1.0 or (v3 and genome.merge_method_weight < 1.0):
        blended = "the task-vector merge" if v3 else "DARE-TIES"
        notes.append(f"merge_method_weight {genome.merge_method_weight} blends {blended} "
                     f"with linear; mergekit has no blend: written as {method}"
                     + ("" if v3 else " (the larger share)"))
    if source.scan is not None:
        notes.append(f"the scan's per-tensor MRI ratios (mri_trust {genome.mri_trust}, "
                     f"{source.scan}): only the genome's ratios are written")
    if method == "dare_ties" and not v3:
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
