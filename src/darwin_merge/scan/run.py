"""`run_scan`: the whole Model Diagnostic Scan of two parents, written atomically.

Order of work: check the probe folder and the parents (cheap refusals first), then
inside a temporary output folder: the static pass over both parents' tensors, the
probe pass (one parent model in memory at a time), the ratio table, scan.json and
the two pictures. A failure anywhere leaves no SCAN_DIR behind.
"""

from __future__ import annotations

import gc
import hashlib
import json
from pathlib import Path

from rich.progress import Progress

from .. import __version__
from ..arch import Taxonomy
from ..arch.model_config import declared_size
from ..arch.rules import CLIP_KINDS
from ..errors import UsageError
from ..eval.tasks import task_label
from ..genome import TRANSPLANT_HIGH, TRANSPLANT_LOW
from ..inspection import require_mergeable
from ..io import ModelSource, atomic_output_dir
from ..io.dtypes import eval_dtype_entry
from ..io.fingerprint import model_fingerprint
from ..io.loading import load_model, load_tokenizer
from ..io.model_ref import resolve_model
from ..merge.engine import ParentTensors
from ..plots.attribution import plot_attribution
from ..plots.mds import plot_mds
from ..plots.mri_ratio import plot_mri_ratio
from ..progress import progress_bar
from ..records import (
    SCAN_VERSION,
    ScanRecord,
    file_names,
    parse_record,
    read_record,
    record_text,
)
from . import attribution as A
from . import probes as P
from .layers import decoder_of
from .ratios import (
    CONTRAST_WEIGHT,
    DEFAULT_FORMULA,
    DEFAULT_TEMPERATURE,
    FORMULAS,
    OWNERSHIP_WEIGHT,
    PROBE_WEIGHT,
    STATIC_WEIGHT,
    attribution_ratio,
    importance_contrast,
    tensor_entries,
    transplant_counts,
)
from .static import DEFAULT_BINS, DEFAULT_MAX_ELEMENTS, sampling_info, scan_static

DEFAULT_ATTRIBUTION_ITEMS = 32
DECIDED = 0.25  # a ratio this far from 0.5 carries a decision (docs/SCAN.md)


def _check_settings(max_tokens: int, batch_size: int, max_prompts: int | None) -> None:
    if max_tokens < 1:
        raise UsageError(f"--max-tokens must be at least 1 (got {max_tokens})")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
    if max_prompts is not None and max_prompts < 1:
        raise UsageError(f"--max-prompts must be at least 1 (got {max_prompts})")


def _context_of(config: dict) -> int | None:
    """max_position_embeddings from a config (top level or its text sub-config)."""
    return declared_size(config, "max_position_embeddings")
    return None


def forward_dtype(settings: dict) -> str:
    """The dtype the scan's forward passes ran in (`eval_dtype`, else `dtype`)."""
    return settings.get("eval_dtype", settings["dtype"])


def _probe_pass(path: Path, role: str, rows: dict[str, list[list[int]]], pad_id: int,
                settings: dict, progress: Progress) -> dict[str, list[float]]:
    model = load_model(path, settings["device"], forward_dtype(settings))
    size = settings["batch_size"]
    total = sum((len(r) + size - 1) // size for r in rows.values())
    task = progress.add_task(f"probe pass ({role}, {len(decoder_of(model).layers)} layers)",
                             total=total)
    profile = P.probe_profile(model, rows, pad_id, size, on_batch=lambda: progress.advance(task))
    del model
    gc.collect()
    return profile


def _static_pass(source: ModelSource, role: str, settings: dict, progress: Progress) -> dict:
    infos = Taxonomy(source.config).classify_all(source.specs())
    clipping = {i.name for i in infos if i.merge_kind in CLIP_KINDS}
    task = progress.add_task(f"static pass ({role})", total=len(source))
    return scan_static(source, settings["bins"], settings["max_elements"], settings["seed"],
                       allow_inf=clipping, on_tensor=lambda _: progress.advance(task))


def run_scan(father: str | Path, mother: str | Path, out: str | Path,
             probes: str | Path | None = None, device: str = "cpu", dtype: str = "float32",
             max_tokens: int = 64, batch_size: int = 8, max_prompts: int | None = None,
             probe_weights: dict[str, float] | None = None, bins: int = DEFAULT_BINS,
             max_elements: int = DEFAULT_MAX_ELEMENTS, seed: int = 0, overwrite: bool = False,
             progress: bool = True, *, formula: str = DEFAULT_FORMULA,
             fitness: dict[str, float] | None = None, base: str | Path | None = None,
             attribution_items: int = DEFAULT_ATTRIBUTION_ITEMS,
             temperature: float = DEFAULT_TEMPERATURE, reuse: bool = False,
             eval_dtype: str | None = None, attribute_probe_sets: bool = True) -> ScanRecord:
    """Scan both parents and write SCAN_DIR (scan.json and its pictures); return the scan.

    `reuse`: when SCAN_DIR already holds a scan of the very same inputs (the parents' and
    base's fingerprints, the probe items token for token, the settings), return it as is;
    any difference recomputes it (and `overwrite` must then be set to replace it).
    `eval_dtype`: the dtype of the forward passes (probes, attribution) when it differs from
    `dtype`, which the parents' tensors (statistics, swaps) keep.
    `attribute_probe_sets`: with `fitness`, also measure the probe sets' text in the
    attribution (only its picture shows them; without them it takes about a third of the
    time). Without `fitness` the probe sets are the attribution's only tasks.
    """
    father, mother, out = resolve_model(father), resolve_model(mother), Path(out)
    base = None if base is None else resolve_model(base)
    _check_settings(max_tokens, batch_size, max_prompts)
    _check_formula(formula, attribution_items, temperature)
    texts = {name: prompts[:max_prompts] for name, prompts in P.load_probes(probes).items()}
    weights = P.normalise_weights(list(texts), probe_weights)
    settings = {"device": device, "dtype": dtype, "max_tokens": max_tokens,
                "batch_size": batch_size, "max_prompts": max_prompts, "bins": bins,
                "max_elements": max_elements, "seed": seed, "skip_method": "cached",
                "static_weight": STATIC_WEIGHT, "probe_weight": PROBE_WEIGHT,
                "transplant_low": TRANSPLANT_LOW, "transplant_high": TRANSPLANT_HIGH,
                "tokenizer": "father's", "formula": formula}
    settings.update(eval_dtype_entry(eval_dtype, dtype))
    if formula == "attribution":
        settings.update(attribution_measurements=A.MEASUREMENTS_VERSION,
                        attribution_items=attribution_items, temperature=temperature,
                        contrast_weight=CONTRAST_WEIGHT, ownership_weight=OWNERSHIP_WEIGHT)
    with ModelSource(father) as source_a, ModelSource(mother) as source_b:
        require_mergeable(source_a, source_b)
        if base is not None:
            with ModelSource(base) as source_w:
                require_mergeable(source_a, source_w)
        tokenizer = load_tokenizer(father)  # the parents of a merge share a vocabulary
        context = _context_of(source_a.config)
        rows = {name: P.tokenize_probe(tokenizer, name, prompts, max_tokens, context)
                for name, prompts in texts.items()}  # refuse a too-long prompt before work
        pad_id = P.pad_id_of(tokenizer)
        tasks, task_weights = [], {}
        if formula == "attribution":
            tasks, task_weights = _attribution_tasks(tokenizer, texts, fitness,
                                                     attribution_items, attribute_probe_sets)
        inputs = scan_inputs((father, mother, base), texts, tasks, task_weights, settings)
        reused = _reusable(out, inputs) if reuse else None
        if reused is not None:
            return reused
        with atomic_output_dir(out, overwrite) as tmp, progress_bar(progress) as bar:
            static_a = _static_pass(source_a, "father", settings, bar)
            static_b = _static_pass(source_b, "mother", settings, bar)
            profile_a = _probe_pass(father, "father", rows, pad_id, settings, bar)
            profile_b = _probe_pass(mother, "mother", rows, pad_id, settings, bar)
            attribution = None
            if formula == "attribution":
                attribution = _attribution_pass((father, mother, base), tasks, task_weights,
                                                pad_id, settings, bar)
            taxonomy = Taxonomy(source_a.config)
            scan = _assemble(father, mother, base, source_a, taxonomy, texts, weights, settings,
                             (static_a, static_b), (profile_a, profile_b), attribution)
            scan["inputs"] = inputs
            scan["inputs_sha256"] = _sha256(inputs)
            record = write_scan(scan, tmp)
    return record


def _check_formula(formula: str, attribution_items: int, temperature: float) -> None:
    if formula not in FORMULAS:
        raise UsageError(f"--mri must be one of {', '.join(FORMULAS)} (got {formula!r})")
    if attribution_items < 1:
        raise UsageError(f"--attribution-items must be at least 1 (got {attribution_items})")
    if not temperature > 0:
        raise UsageError(f"--temperature must be positive (got {temperature})")


def _attribution_tasks(tokenizer, texts: dict, fitness: dict[str, float] | None,
                       limit: int, with_texts: bool = True) -> tuple[list, dict[str, float]]:
    """The probe tasks (fitness tasks' search items, then the card's probe sets unless
    `with_texts` is False beside a fitness) and the weights the ratio serves: the fitness
    weights, or the probe sets equally without them."""
    fitness_tasks = A.fitness_probe_tasks(tokenizer, list(fitness or {}), limit)
    with_texts = with_texts or not fitness
    text_tasks = A.text_probe_tasks(tokenizer, texts) if with_texts else []
    if fitness:
        if any(w < 0 for w in fitness.values()) or sum(fitness.values()) <= 0:
            raise UsageError("fitness weights must be >= 0 with a positive sum")
        names = [t.name for t in fitness_tasks]
        weights = dict(zip(names, fitness.values(), strict=True))
    else:
        weights = {t.name: 1.0 for t in text_tasks}
    total = sum(weights.values())
    return fitness_tasks + text_tasks, {k: v / total for k, v in weights.items()}


def _sha256(record) -> str:
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def scan_inputs(paths: tuple, texts: dict, tasks: list, task_weights: dict,
                settings: dict) -> dict:
    """What decides a scan's content: a resumed run recomputes when any of it changed."""
    father, mother, base = paths
    return {
        "father": model_fingerprint(father), "mother": model_fingerprint(mother),
        "base": None if base is None else model_fingerprint(base),
        "probes_sha256": P.probes_sha256(texts),
        "attribution_items_sha256": _sha256(A.probe_items_signature(tasks)),
        "attribution_weights": task_weights,
        "settings": settings,
    }


def _reusable(out: Path, inputs: dict) -> ScanRecord | None:
    """The scan already in `out` when it was made from exactly these inputs."""
    if not (out / file_names.SCAN).is_file():
        return None
    try:
        scan = load_scan(out)
    except UsageError:
        return None
    return scan if scan.inputs_sha256 == _sha256(inputs) else None


def _attribution_pass(paths: tuple, tasks: list, task_weights: dict, pad_id: int,
                      settings: dict, progress: Progress) -> dict:
    father, mother, base = paths
    parents = ParentTensors.load(father, mother, base, device=settings["device"],
                                 dtype=settings["dtype"])
    model = load_model(father, settings["device"], forward_dtype(settings))
    groups = A.tensor_groups(parents.infos)
    spans = A.block_spans(list(groups))
    units = {**groups, **{span: [n for g in members for n in groups[g]]
                          for span, members in spans.items()}}
    items = sum(len(t.groups) for t in tasks)
    evaluations = 2 * len(units) + 3
    task = progress.add_task(f"attribution ({len(groups)} groups and {len(spans)} spans x 2 "
                             f"swaps, {items} items)", total=evaluations)
    raw = A.measure(model, parents.father, parents.mother, units, tasks,
                    settings["batch_size"], pad_id, on_step=lambda: progress.advance(task))
    table = A.summarise(raw, groups, tasks, spans)
    evidence = A.group_evidence(table, task_weights, list(groups))
    vectors = A.task_vector_stats(parents.father, parents.mother, parents.base)
    del model, parents
    gc.collect()
    return {
        "weights": task_weights,
        "context": A.preferred_parent(table, task_weights),
        "groups": {g: {"tensors": len(names), **evidence[g]} for g, names in groups.items()},
        "spans": {span: {"groups": members, "tensors": len(units[span])}
                  for span, members in spans.items()},
        "tasks": table,
        "task_vectors": vectors,
        "evaluations": evaluations,
        "items_per_evaluation": items,
    }


def _assemble(father: Path, mother: Path, base: Path | None, source: ModelSource,
              taxonomy: Taxonomy, texts: dict, weights: dict, settings: dict, statics: tuple,
              profiles: tuple, attribution: dict | None) -> dict:
    scores = [P.probe_scores(profile, weights) for profile in profiles]
    layers = {role: layer_rows(profile, score)
              for role, profile, score in zip(("father", "mother"), profiles, scores, strict=True)}
    infos = taxonomy.classify_all(source.specs())
    tensors = tensor_entries(infos, statics[0], statics[1], scores[0], scores[1])
    if attribution is not None:
        apply_attribution(tensors, infos, attribution, importance_contrast(*scores),
                          settings["temperature"])
    sampled = sorted({n for static in statics for n, s in static.items() if s["sampled"]})
    ratios = {n: t["mri_ratio"] for n, t in tensors.items()}
    scan = {
        "version": SCAN_VERSION, "darwin_version": __version__,
        "father": str(father), "mother": str(mother),
        "base": None if base is None else str(base), "family": taxonomy.family,
        "num_layers": len(scores[0]), "formula": settings["formula"],
        "probe_weights": weights, "probes_sha256": P.probes_sha256(texts),
        "probe_sets": {name: len(prompts) for name, prompts in texts.items()},
        "settings": settings,
        "sampling": sampling_info(settings["bins"], settings["max_elements"], settings["seed"],
                                  sampled),
        "layers": layers,
        "transplant": transplant_counts(ratios),
        "tensors": tensors,
    }
    if attribution is not None:
        scan["attribution"] = {k: v for k, v in attribution.items() if k != "task_vectors"}
    return scan


def apply_attribution(tensors: dict[str, dict], infos, attribution: dict,
                      contrast: list[float], temperature: float) -> None:
    """Each tensor's mri_ratio from its group's evidence, its layer's importance contrast
    and its task vectors (the card's ratio stays beside it as `card_ratio`)."""
    for info in infos:
        entry = tensors[info.name]
        group = A.group_of(info)
        vectors = attribution["task_vectors"].get(info.name, {})
        layer_contrast = contrast[info.layer] if info.layer is not None and info.layer < len(
            contrast) else 0.0
        ownership = vectors.get("ownership", 0.0)
        entry.update(group=group, card_ratio=entry["mri_ratio"],
                     z=attribution["groups"][group]["z"], contrast=layer_contrast,
                     rel_change=vectors.get("rel_change", 0.0), ownership=ownership,
                     mri_ratio=attribution_ratio(attribution["groups"][group]["z"],
                                                 layer_contrast, ownership, temperature))


def layer_rows(profile: dict[str, list[float]], scores: list[float]) -> list[dict]:
    """scan.json's per-parent layer table: one row per decoder layer."""
    return [{"layer": layer, "distances": {name: dist[layer] for name, dist in profile.items()},
             "probe_score": score} for layer, score in enumerate(scores)]


def layer_matrix(rows: list[dict[str, float]]) -> tuple[list[str], list[list[float]]]:
    """(probe names, [layer][probe] distances) from a parent's per-layer distances."""
    names = list(rows[0]) if rows else []
    return names, [[row[n] for n in names] for row in rows]


def write_scan(scan: dict, folder: Path) -> ScanRecord:
    """scan.json (checked against its schema) and the two pictures into `folder`; the
    record written."""
    record = parse_record(ScanRecord, scan, "the scan being written")
    (folder / file_names.SCAN).write_text(record_text(record, indent=1), encoding="utf-8")
    plot_mds(scan["layers"], folder / file_names.MDS_PICTURE)
    plot_mri_ratio(scan["tensors"], folder / file_names.MRI_PICTURE,
                   scan["settings"]["transplant_low"], scan["settings"]["transplant_high"])
    if "attribution" in scan:
        plot_attribution(scan["attribution"], folder / file_names.ATTRIBUTION_PICTURE)
    return record


def load_scan(path: str | Path) -> ScanRecord:
    """Read a scan (SCAN_DIR or its scan.json), refusing a file that is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / file_names.SCAN
    if not path.is_file():
        raise UsageError(f"{path}: no such scan file (run `darwin scan` first)")
    return read_record(ScanRecord, path)


def attribution_lines(attribution: dict, top: int = 3) -> list[str]:
    """Per task, the groups whose mother's version helps and hurts it most."""
    lines = []
    for task, row in attribution["tasks"].items():
        if row["role"] != "fitness" and len(attribution["tasks"]) > len(attribution["weights"]):
            continue
        ranked = sorted(row["groups"], key=lambda g: -row["groups"][g]["effect"])
        best = ", ".join(f"{g} {row['groups'][g]['effect'] / row['scale']:+.2f}"
                         for g in ranked[:top])
        worst = ", ".join(f"{g} {row['groups'][g]['effect'] / row['scale']:+.2f}"
                          for g in ranked[::-1][:top])
        lines.append(f"{task_label(task)}: the mother's version helps most in {best}; hurts "
                     f"most in {worst} (item SDs; father {row['father']:.3f}, mother "
                     f"{row['mother']:.3f})")
    return lines


def summary_lines(scan: ScanRecord, top: int = 3) -> list[str]:
    """The terminal summary: where each parent concentrates each probe; transplant zones."""
    lines = []
    for role in ("father", "mother"):
        parts = []
        names, matrix = layer_matrix(scan.layer_distances()[role])
        for column, name in enumerate(names):
            dist = [row[column] for row in matrix]
            best = sorted(range(len(dist)), key=lambda i: (-dist[i], i))[:top]
            parts.append(f"{name} {','.join(map(str, best))} (peak {dist[best[0]]:.3g})")
        lines.append(f"{role}: top layers per probe: " + "; ".join(parts))
    if scan.attribution is not None:
        lines.extend(attribution_lines(scan.attribution, top))
    counts, settings = scan.transplant, scan.settings
    ratios = list(scan.mri_ratios().values())
    decided = sum(1 for r in ratios if abs(r - 0.5) >= DECIDED)
    version = settings.attribution_measurements
    older = "" if version is None or version >= A.MEASUREMENTS_VERSION else (
        f" (attribution measurements version {version}: ratios from the preferred parent's "
        "swaps only, kept as they were; scan again for both swaps and the spans)")
    lines.append(f"formula {scan.formula}: {decided} of {len(ratios)} tensors "
                 f"at least {DECIDED} from 0.5{older}")
    lines.append(
        f"mri_ratio over {len(ratios)} tensors: min {min(ratios):.3f}, "
        f"mean {sum(ratios) / len(ratios):.3f}, max {max(ratios):.3f}; transplant zones: "
        f"{counts.father} < {settings.transplant_low} (father whole), "
        f"{counts.mother} > {settings.transplant_high} (mother whole)")
    return lines
