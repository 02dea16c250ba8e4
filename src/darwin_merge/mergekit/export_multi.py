"""The closest mergekit YAML for an N-parent genome (`darwin export-mergekit` of an N-parent
merge or genome file with `--model`): each parent's task-vector weight per tensor group and
layer under `lambda` = the largest scale, written as export.py writes a v3 genome's two
(`weight_setting`), read back with the importer's own evaluation and compared with the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import __version__
from ..arch import Taxonomy
from ..arch.rules import MergeMode
from ..errors import UsageError
from ..io import ModelSource
from ..io.dtypes import main_dtype
from ..merge.multi_plan import SharesRow, model_roles, plan_models_multi
from ..merge.plan import MergeSettings, make_settings
from ..multi_genome import MultiGenome, load_multi_genome
from ..records import MergeRecord, file_names, read_record
from .config import config_from_dict
from .export import (
    WRITTEN_DECIMALS,
    not_carried_task_vectors,
    report_file,
    task_vector_config,
    v3_method,
    weight_gaps,
    weight_setting,
    yaml_model,
)


def multi_parent_weights(row: SharesRow, genome: MultiGenome) -> tuple[float, ...]:
    """A tensor's task-vector weights, one per parent, under `lambda` = the largest scale
    (`MultiGenome.weights`); a transplant: its parent at 1 / lambda (base + its task vector:
    its own tensor), the others at 0."""
    weights, scale = genome.weights(row.shares)
    if row.mode == MergeMode.TRANSPLANT_PARENT:
        whole = 1.0 / scale if scale > 0.0 else 1.0
        weights = tuple(whole if i == row.taken else 0.0 for i in range(len(weights)))
    return tuple(round(w, WRITTEN_DECIMALS) for w in weights)


def export_mergekit_multi(genome: MultiGenome, models: list, base=None,
                          settings: MergeSettings | None = None, dtype: str | None = None,
                          origin: str = "an N-parent genome") -> str:
    """The mergekit YAML text for N parents, its header saying what is approximate."""
    settings = settings or MergeSettings()
    rows = plan_models_multi(models, genome, base=base, settings=settings)
    with ModelSource(models[0]) as first:
        num_layers = Taxonomy(first.config).num_layers
        dtype = dtype or str(main_dtype(first)).removeprefix("torch.")
    merged = [r for r in rows if r.mode != MergeMode.EXACT]
    method = v3_method(genome)
    weights = {r.name: multi_parent_weights(r, genome) for r in merged}
    per_parent = [weight_setting(merged, {n: w[i] for n, w in weights.items()}, num_layers)
                  for i in range(len(models))]
    densities = {"ties": (genome.trim_density,) * len(models),
                 "dare_ties": tuple(p.density for p in genome.parents)}.get(method)
    config = task_vector_config(method, tuple(models), per_parent, densities, base,
                                genome.takes_disjoint_mean, genome.scale, dtype)
    written = tuple(config_from_dict(config, "exported config").models)
    gaps = weight_gaps(written if base is not None else (None, *written), merged, weights,
                       num_layers)
    return _header(genome, origin, method, len(merged), gaps, len(models)) + yaml.safe_dump(
        config, sort_keys=False, default_flow_style=None, width=100)


def _header(genome: MultiGenome, origin: str, method: str, total: int, gaps: list[float],
            parents: int) -> str:
    densities = {f"density of {role}": p.density
                 for role, p in zip(model_roles(parents), genome.parents, strict=True)}
    notes = not_carried_task_vectors(method, densities, genome.trim_density)
    if genome.merge_method_weight < 1.0:
        notes.append(f"merge_method_weight {genome.merge_method_weight} blends the "
                     f"task-vector merge with linear; mergekit has no blend: written as "
                     f"{method}")
    notes.append(f"a tensor's shares: {parents} parents' pulls divided by their sum; "
                 "mergekit gets the resulting weights only")
    lines = [
        f"mergekit config exported by darwin {__version__} from {origin}",
        "APPROXIMATE: the closest mergekit config for this darwin genome, not the same merge.",
        f"N-parent genome (rule v3 over {parents} models, docs/MERGE.md \"N parents\"): per "
        "tensor group and layer, parent i's task-vector weight = N share_i scale_i / "
        "lambda, lambda = the largest scale.",
        f"{total - len(gaps)} of {total} float tensors get darwin's exact weights"
        + (f"; {len(gaps)} differ by up to {max(gaps):.4f}" if gaps else "") + ".",
        "transplants (one share above transplant_high): that parent at 1 / lambda, the "
        "others at 0 (its tensor, before any trim).",
        "Not carried over:", *(f"  - {note}" for note in notes)]
    return "".join(f"# {line}\n" for line in lines)


@dataclass(frozen=True)
class MultiExportSource:
    """What an N-parent export needs: the genome, its models in order, the base, the merge
    options, the output dtype and where they came from."""

    genome: MultiGenome
    models: list
    base: object
    settings: MergeSettings
    dtype: str | None
    origin: str


def read_multi_source(path: str | Path, models: list | None = None, base=None
                      ) -> MultiExportSource | None:
    """An N-parent merge's darwin_merge.json (a child folder, or the file) or an N-parent
    genome file (then with --model); None for a two-parent source. Models given here
    replace those the record names; each is resolved as the two-parent export resolves its
    parents (a folder made absolute, or a Hub reference)."""
    path = report_file(Path(path))
    found = _recorded(path) if path.name == file_names.MERGE_RECORD else _genome_file(path)
    if found is None:
        return None
    genome, recorded_models, recorded_base, settings, dtype = found
    models = list(models or recorded_models or [])
    if not models:
        raise UsageError(f"{path}: an N-parent genome names no models; give them with "
                         "--model, in its parents' order")
    base = base or recorded_base
    return MultiExportSource(
        genome, [yaml_model(m, role) for m, role in zip(models, model_roles(len(models)),
                                                        strict=True)],
        None if base is None else yaml_model(base, "base"), settings, dtype, str(path))


def _recorded(path: Path) -> tuple | None:
    """An N-parent merge record's genome, models, base, settings and dtype (None: a
    two-parent record)."""
    record = read_record(MergeRecord, path)
    if record.parent_genes is None:
        return None
    genome = load_multi_genome(path)
    recorded = record.options.model_dump(exclude_unset=True)
    settings = make_settings(**{k: recorded[k] for k in MergeSettings.model_fields
                                if k in recorded})
    return genome, record.parents.models, record.parents.base, settings, record.options.dtype


def _genome_file(path: Path) -> tuple | None:
    """An N-parent genome file's genome (None: not one; the two-parent reader then says
    what is wrong with the file)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("parents"), list):
        return None
    return load_multi_genome(path), None, None, MergeSettings(), None
