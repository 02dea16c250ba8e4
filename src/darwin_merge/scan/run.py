"""`run_scan`: the whole Model Diagnostic Scan of two parents, written atomically.

Order of work: check the probe folder and the parents (cheap refusals first), then
inside a temporary output folder: the static pass over both parents' tensors, the
probe pass (one parent model in memory at a time), the ratio table, scan.json and
the two pictures. A failure anywhere leaves no SCAN_DIR behind.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

from rich.progress import Progress

from .. import __version__
from ..arch import Taxonomy
from ..errors import UsageError
from ..inspection import require_mergeable
from ..io import ModelSource, atomic_output_dir
from ..io.loading import load_model, load_tokenizer
from ..progress import progress_bar
from . import probes as P
from .layers import decoder_of
from .plots import plot_mds, plot_mri_ratio
from .ratios import (
    PROBE_WEIGHT,
    STATIC_WEIGHT,
    TRANSPLANT_HIGH,
    TRANSPLANT_LOW,
    tensor_entries,
    transplant_counts,
)
from .static import DEFAULT_BINS, DEFAULT_MAX_ELEMENTS, sampling_info, scan_static

SCAN_VERSION = 1
SCAN_FILE = "scan.json"
MDS_PICTURE = "mds_father_mother.png"
MRI_PICTURE = "mri_ratio.png"


def _check_settings(max_tokens: int, batch_size: int, max_prompts: int | None) -> None:
    if max_tokens < 1:
        raise UsageError(f"--max-tokens must be at least 1 (got {max_tokens})")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
    if max_prompts is not None and max_prompts < 1:
        raise UsageError(f"--max-prompts must be at least 1 (got {max_prompts})")


def _context_of(config: dict) -> int | None:
    """max_position_embeddings from a config (top level or its text sub-config)."""
    for cfg in (config, config.get("text_config") or {}):
        if isinstance(cfg.get("max_position_embeddings"), int):
            return cfg["max_position_embeddings"]
    return None


def _probe_pass(path: Path, role: str, rows: dict[str, list[list[int]]], pad_id: int,
                settings: dict, progress: Progress) -> dict[str, list[float]]:
    model = load_model(path, settings["device"], settings["dtype"])
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
    clipping = {i.name for i in infos if i.merge_kind in ("clip_min", "clip_max")}
    task = progress.add_task(f"static pass ({role})", total=len(source))
    return scan_static(source, settings["bins"], settings["max_elements"], settings["seed"],
                       allow_inf=clipping, on_tensor=lambda _: progress.advance(task))


def run_scan(father: str | Path, mother: str | Path, out: str | Path,
             probes: str | Path | None = None, device: str = "cpu", dtype: str = "float32",
             max_tokens: int = 64, batch_size: int = 8, max_prompts: int | None = None,
             probe_weights: dict[str, float] | None = None, bins: int = DEFAULT_BINS,
             max_elements: int = DEFAULT_MAX_ELEMENTS, seed: int = 0, overwrite: bool = False,
             progress: bool = True) -> dict:
    """Scan both parents and write SCAN_DIR (scan.json and two PNGs); return the scan."""
    father, mother, out = Path(father), Path(mother), Path(out)
    _check_settings(max_tokens, batch_size, max_prompts)
    texts = {name: prompts[:max_prompts] for name, prompts in P.load_probes(probes).items()}
    weights = P.normalise_weights(list(texts), probe_weights)
    settings = {"device": device, "dtype": dtype, "max_tokens": max_tokens,
                "batch_size": batch_size, "max_prompts": max_prompts, "bins": bins,
                "max_elements": max_elements, "seed": seed, "skip_method": "cached",
                "static_weight": STATIC_WEIGHT, "probe_weight": PROBE_WEIGHT,
                "transplant_low": TRANSPLANT_LOW, "transplant_high": TRANSPLANT_HIGH,
                "tokenizer": "father's"}
    with ModelSource(father) as source_a, ModelSource(mother) as source_b:
        require_mergeable(source_a, source_b)
        tokenizer = load_tokenizer(father)  # the parents of a merge share a vocabulary
        context = _context_of(source_a.config)
        rows = {name: P.tokenize_probe(tokenizer, name, prompts, max_tokens, context)
                for name, prompts in texts.items()}  # refuse a too-long prompt before work
        pad_id = P.pad_id_of(tokenizer)
        with atomic_output_dir(out, overwrite) as tmp, progress_bar(progress) as bar:
            static_a = _static_pass(source_a, "father", settings, bar)
            static_b = _static_pass(source_b, "mother", settings, bar)
            profile_a = _probe_pass(father, "father", rows, pad_id, settings, bar)
            profile_b = _probe_pass(mother, "mother", rows, pad_id, settings, bar)
            taxonomy = Taxonomy(source_a.config)
            scan = _assemble(father, mother, source_a, taxonomy, texts, weights, settings,
                             (static_a, static_b), (profile_a, profile_b))
            write_scan(scan, tmp)
    return scan


def _assemble(father: Path, mother: Path, source: ModelSource, taxonomy: Taxonomy,
              texts: dict, weights: dict, settings: dict, statics: tuple,
              profiles: tuple) -> dict:
    scores = [P.probe_scores(profile, weights) for profile in profiles]
    layers = {role: layer_rows(profile, score)
              for role, profile, score in zip(("father", "mother"), profiles, scores, strict=True)}
    infos = taxonomy.classify_all(source.specs())
    tensors = tensor_entries(infos, statics[0], statics[1], scores[0], scores[1])
    sampled = sorted({n for static in statics for n, s in static.items() if s["sampled"]})
    ratios = {n: t["mri_ratio"] for n, t in tensors.items()}
    return {
        "version": SCAN_VERSION, "darwin_version": __version__,
        "father": str(father), "mother": str(mother), "family": taxonomy.family,
        "num_layers": len(scores[0]),
        "probe_weights": weights, "probes_sha256": P.probes_sha256(texts),
        "probe_sets": {name: len(prompts) for name, prompts in texts.items()},
        "settings": settings,
        "sampling": sampling_info(settings["bins"], settings["max_elements"], settings["seed"],
                                  sampled),
        "layers": layers,
        "transplant": transplant_counts(ratios),
        "tensors": tensors,
    }


def layer_rows(profile: dict[str, list[float]], scores: list[float]) -> list[dict]:
    """scan.json's per-parent layer table: one row per decoder layer."""
    return [{"layer": layer, "distances": {name: dist[layer] for name, dist in profile.items()},
             "probe_score": score} for layer, score in enumerate(scores)]


def layer_matrix(rows: list[dict]) -> tuple[list[str], list[list[float]]]:
    """(probe names, [layer][probe] distances) from a parent's layer table."""
    names = list(rows[0]["distances"]) if rows else []
    return names, [[row["distances"][n] for n in names] for row in rows]


def write_scan(scan: dict, folder: Path) -> None:
    """scan.json and the two pictures into `folder`."""
    (folder / SCAN_FILE).write_text(json.dumps(scan, indent=1) + "\n", encoding="utf-8")
    plot_mds(scan["layers"], folder / MDS_PICTURE)
    plot_mri_ratio(scan["tensors"], folder / MRI_PICTURE, scan["settings"]["transplant_low"],
                   scan["settings"]["transplant_high"])


def load_scan(path: str | Path) -> dict:
    """Read a scan (SCAN_DIR or its scan.json), refusing a file that is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / SCAN_FILE
    try:
        scan = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no such scan file (run `darwin scan` first)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: unreadable or not JSON") from exc
    if not isinstance(scan, dict) or not isinstance(scan.get("tensors"), dict):
        raise UsageError(f"{path}: not a Darwin scan (no 'tensors' table)")
    if scan.get("version") != SCAN_VERSION:
        raise UsageError(f"{path}: scan version {scan.get('version')!r}, expected {SCAN_VERSION}")
    return scan


def mri_ratios(scan: dict) -> dict[str, float]:
    """Tensor name -> prescribed mother share (what the merge engine blends with the genome)."""
    return {name: float(entry["mri_ratio"]) for name, entry in scan["tensors"].items()}


def summary_lines(scan: dict, top: int = 3) -> list[str]:
    """The terminal summary: where each parent concentrates each probe; transplant zones."""
    lines = []
    for role in ("father", "mother"):
        parts = []
        names, matrix = layer_matrix(scan["layers"][role])
        for column, name in enumerate(names):
            dist = [row[column] for row in matrix]
            best = sorted(range(len(dist)), key=lambda i: (-dist[i], i))[:top]
            parts.append(f"{name} {','.join(map(str, best))} (peak {dist[best[0]]:.3g})")
        lines.append(f"{role}: top layers per probe: " + "; ".join(parts))
    counts = scan["transplant"]
    ratios = list(mri_ratios(scan).values())
    settings = scan["settings"]
    lines.append(
        f"mri_ratio over {len(ratios)} tensors: min {min(ratios):.3f}, "
        f"mean {sum(ratios) / len(ratios):.3f}, max {max(ratios):.3f}; transplant zones: "
        f"{counts['father']} < {settings['transplant_low']} (father whole), "
        f"{counts['mother']} > {settings['transplant_high']} (mother whole)")
    return lines
