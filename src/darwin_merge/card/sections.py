"""The card's sections, built from the records; a section without data is left out.

No number appears here that is not in the records: absent data gives an absent
section (or an absent row), never a placeholder value.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..arch.rules import MergeMode
from ..genome import (
    GENES,
    RULE_OF_OLD_FILES,
    TRANSPLANT_HIGH,
    TRANSPLANT_LOW,
    V3_GENES,
    Genome,
    genome_from_dict,
)
from ..plots.ratio_profile import plot_ratio_profile
from ..records import VocabularyRecord, file_names
from ..report_tables import baseline_blocks, holdout_blocks
from .blocks import Bullets, Code, Picture, Section, Table
from .readings import reading, share_words, strongest_pulls
from .records import RUN_PICTURES, RunRecords

MODE_WORDS = {
    MergeMode.TRANSPLANT_FATHER: "copied from the father (ratio below the transplant threshold)",
    MergeMode.TRANSPLANT_MOTHER: "copied from the mother (ratio above the transplant threshold)",
    MergeMode.DARE_TIES: "DARE-TIES blended with linear by merge_method_weight",
    MergeMode.LINEAR: "linear interpolation only",
    MergeMode.CLIP_MIN: "clipping bound (lower), merged by its own rule",
    MergeMode.CLIP_MAX: "clipping bound (upper), merged by its own rule",
    MergeMode.EXACT: "copied unchanged (integers and buffers)",
}


def card_sections(rec: RunRecords, scratch: Path) -> list[Section]:
    """Every section the card has data for, in the card's order."""
    builders = (_overview, _parents, _scan, _genome, _ratio_profile, _evolution,
                _benchmarks, _health, _reproducibility, _usage)
    sections = [build(rec, scratch) for build in builders]
    return [s for s in sections if s is not None]


def _picture(rec: RunRecords, role: str, caption: str) -> Picture | None:
    path = rec.pictures.get(role)
    return Picture(path, RUN_PICTURES[role][1], caption) if path else None


def _overview(rec: RunRecords, scratch: Path) -> Section:
    names = {p.role: p.hub_id or p.source for p in rec.parents}
    if "father" in names and "mother" in names:
        text = f"`{rec.name}` is a merge of `{names['father']}` (father) and " \
               f"`{names['mother']}` (mother)"
        text += f", with `{names['base']}` as their common base" if "base" in names else ""
        text += ", made with Darwin (DARE-TIES written in PyTorch, with a ratio of its own " \
                "for every tensor)."
    else:
        text = f"`{rec.name}` is a model folder without Darwin merge records."
    blocks: list = [text]
    trials = rec.summary.phase2.trials if rec.summary else None
    if trials is not None:
        blocks.append(f"Its 14-value genome was searched with CMA-ES: a cheap proxy in Phase 1, "
                      f"then {trials} real merges scored in Phase 2.")
    return Section(rec.name, blocks, anchor="overview")


def _parents(rec: RunRecords, scratch: Path) -> Section | None:
    if not rec.parents:
        return None
    rows = [[p.role.capitalize(), f"`{p.hub_id or p.source}`", p.architecture or "unknown",
             str(p.num_layers) if p.num_layers else "unknown", p.license or "not declared"]
            for p in rec.parents]
    blocks: list = [Table(["Role", "Model", "Architecture", "Layers", "License"], rows)]
    tokenizer = _tokenizer_words(rec.merge.vocabulary if rec.merge else None)
    if tokenizer:
        blocks.append(tokenizer)
    return Section("Parent models", blocks, anchor="parents")


def _tokenizer_words(vocab: VocabularyRecord | None) -> str | None:
    """Where the child's tokenizer comes from (darwin_merge.json's `vocabulary`)."""
    if vocab is None or not vocab.tokenizer_source:
        return None
    source = vocab.tokenizer_source
    if vocab.same:
        return f"Tokenizer: the {source}'s (both parents have the same vocabulary)."
    words = {"father": "the father's", "mother": "the mother's",
             "union": "the union of both parents' vocabularies"}
    return (f"Tokenizer: {words.get(source, source)} (`--tokenizer-source {source}`): "
            f"{vocab.rows} embedding rows, {vocab.merged_rows} merged from both "
            f"parents by token string; {len(vocab.father_only_tokens or ())} token(s) "
            f"only the father knows, {len(vocab.mother_only_tokens or ())} only the "
            "mother.")


def _scan(rec: RunRecords, scratch: Path) -> Section | None:
    mds = _picture(rec, "mds", "Model Diagnostic Scan: father (left), mother (right)")
    mri = _picture(rec, "mri_ratio",
                   "The scan's ratio (mri_ratio, the mother's share) by layer and component")
    if mds is None and mri is None:
        return None
    blocks: list = ["Both parents were scanned: per-tensor statistics (entropy, std, norm) "
                    "and probe prompts measuring each layer's importance."]
    blocks += [p for p in (mds, mri) if p is not None]
    return Section("Model Diagnostic Scan (MDS)", blocks, anchor="scan")


def _genome(rec: RunRecords, scratch: Path) -> Section | None:
    genome = rec.genome
    if not genome:
        return None
    has_base = any(p.role == "base" for p in rec.parents) or rec.merge is None
    used_scan = bool(rec.options.scan) if rec.merge else True
    names = [n for n in (*GENES, *V3_GENES) if n in genome]
    rows = [[n, f"{float(genome[n]):.4f}",
             reading(n, float(genome[n]), rec.num_layers, has_base, used_scan)] for n in names]
    rule = genome.get("genome_rule", RULE_OF_OLD_FILES)
    blocks: list = [f"The {len(names)} values the merge used. Ratios are the mother's share "
                    f"(0 = all father, 1 = all mother), read under genome rule `{rule}` "
                    "(how the values become per-tensor ratios: Darwin's docs/MERGE.md).",
                    Table(["Gene", "Value", "Reading"], rows)]
    if any(n.endswith("_ratio") for n in names):
        (lo_name, lo), (hi_name, hi) = strongest_pulls({n: float(genome[n]) for n in names})
        blocks.append(f"Strongest pulls: `{lo_name}` = {lo:.2f} ({share_words(lo)}) and "
                      f"`{hi_name}` = {hi:.2f} ({share_words(hi)}).")
    return Section("Genome", blocks, anchor="genome")


def _ratio_profile(rec: RunRecords, scratch: Path) -> Section | None:
    tensors = [row.model_dump() for row in rec.merge.tensors] if rec.merge else []
    options = rec.options
    path = plot_ratio_profile(tensors, scratch / file_names.RATIO_PROFILE_PICTURE,
                              _given(options.transplant_low, TRANSPLANT_LOW),
                              _given(options.transplant_high, TRANSPLANT_HIGH)) if tensors else None
    modes = rec.merge.modes if rec.merge else {}
    if path is None and not modes:
        return None
    blocks: list = []
    if path is not None:
        source = "genome and scan combined" if options.scan else \
            "the genome alone: the merge had no scan"
        blocks += [f"The mother's share each decoder layer really got ({source}), mean "
                   "over each component's tensors, from the child's `darwin_merge.json`.",
                   Picture(path, file_names.RATIO_PROFILE_PICTURE, "Ratio profile by layer")]
    if modes:
        rows = [[mode, str(count), MODE_WORDS.get(mode, "")] for mode, count in
                sorted(modes.items(), key=lambda kv: -kv[1])]
        blocks.append(Table(["Mode", "Tensors", "Meaning"], rows))
    return Section("Ratio profile", blocks, anchor="ratio-profile")


def _given(value, default):
    """`value`, or `default` when the record does not hold it (an older file)."""
    return default if value is None else value


def _evolution(rec: RunRecords, scratch: Path) -> Section | None:
    s, best = rec.summary, rec.best
    if s is None:
        return None
    p1, p2 = s.phase1, s.phase2
    rows = []
    if best.search_fitness is not None:
        rows.append(["Best search fitness", _num(best.search_fitness)])
    if best.trial is not None:
        rows.append(["Best trial", str(best.trial)])
    if best.proposer() is not None:
        rows.append(["Found by", best.proposer()])
    if s.fitness:
        rows.append(["Fitness", " + ".join(f"{w:g} x {t}" for t, w in s.fitness.items())])
    labels = {"proxy_model": "Phase 1 proxy", "steps": "Phase 1 proxy steps",
              "seconds": "Phase 1 seconds",
              "top_k": "Phase 1 top-k sent to Phase 2", "pairs": "Phase 1 pairs compared",
              "spearman": "Phase 1 proxy vs real (Spearman, all candidates)",
              "spearman_full": "Phase 1 proxy vs real (Spearman, fully scored only)",
              "pairs_full": "Phase 1 fully scored candidates compared"}
    rows += [[label, _plain(getattr(p1, key))] for key, label in labels.items()
             if getattr(p1, key) is not None]
    rows += [[label, _plain(getattr(p2, key))] for key, label in
             {"trials": "Phase 2 trials", "seconds": "Phase 2 seconds",
              "cma_es_generations": "CMA-ES generations",
              "cma_es_step": "CMA-ES first step (sigma0, gene coordinates in [0, 1])",
              "stopped_by_racing": "Candidates stopped early by racing",
              "stopped_within_one_se": "Of them, within one SE of the incumbent"}.items()
             if getattr(p2, key) is not None]
    if p2.best_seed is not None:
        seed = p2.best_seed
        rows.append(["Best seed", f"{seed.proposer()}, trial {seed.trial}, "
                                  f"search fitness {_num(seed.search_fitness)}"])
    if p2.cma_es_gain is not None:
        rows.append(["CMA-ES gain over the best seed", f"{p2.cma_es_gain:+.4f}"])
    if p2.front is not None:
        rows.append(["Pareto front (fitness against probe excess; trials, fittest first)",
                     ", ".join(map(str, p2.front)) or "empty"])
    if p2.prefer is not None:
        rows.append(["Child chosen by (--prefer)", p2.prefer])
    rows.append(["Better on the search split, rejected by the health check",
                 ", ".join(f"trial {r.trial} ({_num(r.search_fitness)}, {r.verdict})"
                           for r in s.rejected_by_health) or "none"])
    if not rows:
        return None
    return Section("Evolution result", [Table(["", "Value"], rows)], anchor="evolution")


def _benchmarks(rec: RunRecords, scratch: Path) -> Section | None:
    if rec.summary is None:
        return None
    blocks = holdout_blocks(rec.summary)
    return Section("Benchmarks", blocks + baseline_blocks(rec.summary),
                   anchor="benchmarks") if blocks else None


def _num(value) -> str:
    if isinstance(value, float):
        return f"{value + 0.0:.4f}"  # + 0.0: no "-0.0000"
    return str(value)


def _plain(value) -> str:
    """Counts and seconds as written (3.1, 200), rounded to 4 decimals at most."""
    return str(round(value, 4)) if isinstance(value, float) else str(value)


def _health(rec: RunRecords, scratch: Path) -> Section | None:
    h = rec.health
    picture = _picture(rec, "health", "Layer-by-layer health check: child against both parents")
    if h is None and picture is None:
        return None
    blocks: list = []
    if h is not None and h.verdict:
        blocks.append(f"Verdict: **{h.verdict}**")
    if h is not None and h.reasons:
        blocks.append(Bullets([str(r) for r in h.reasons]))
    flagged = h.flagged_layers if h is not None else None
    if flagged:
        blocks.append(f"Flagged layers: {', '.join(str(f) for f in flagged)}.")
    elif flagged is not None:
        blocks.append("No layer was flagged.")
    if picture is not None:
        blocks.append(picture)
    return Section("Health check", blocks, anchor="health")


def _reproducibility(rec: RunRecords, scratch: Path) -> Section | None:
    rows = []
    if rec.genome_hash:
        rows.append(["genome_hash", f"`{rec.genome_hash}`"])
    s = rec.summary
    for key in ("created", "device", "dtype", "eval_dtype"):
        if s is not None and getattr(s, key):
            rows.append([key, str(getattr(s, key))])
    versions = {lib: v for lib, v in s.versions.items() if v is not None} if s else {}
    version = s.darwin_version if s else (rec.merge.darwin_version if rec.merge else None)
    if version and not any(lib.startswith("darwin") for lib in versions):
        rows.append(["darwin", str(version)])
    rows += [[lib, str(v)] for lib, v in versions.items()]
    blocks: list = []
    if rows:
        blocks.append(Table(["", "Value"], rows))
    command = s.command.strip() if s else ""
    if len(command.split()) > 1:  # a bare "darwin" (a run started from Python) says nothing
        blocks += ["The run's command:", Code("bash", command)]
    blocks += _remake(rec)
    return Section("Reproducibility", blocks, anchor="reproducibility") if blocks else None


# `darwin merge` flags for the options in darwin_merge.json, with their defaults.
MERGE_FLAGS = {"base": ("--base", None), "scan": ("--scan", None), "dtype": ("--dtype", None),
               "transplant_low": ("--transplant-low", TRANSPLANT_LOW),
               "transplant_high": ("--transplant-high", TRANSPLANT_HIGH),
               "compute_dtype": ("--compute-dtype", "float32")}


def _remake(rec: RunRecords) -> list:
    """The merge options, the `darwin merge` command that remakes the child from its
    parents (same genome and options: a byte-identical child), and the genome as YAML."""
    if rec.merge is None:
        return _genome_file(rec)
    # the options as the file holds them (an older file may hold fewer)
    options = rec.merge.options.model_dump(mode="json", exclude_unset=True)
    parents = rec.merge.parents
    blocks: list = []
    if options:
        blocks += ["Merge options (with the genome they fix every random draw):",
                   Code("json", json.dumps(options, indent=1, sort_keys=True))]
    if parents.father and parents.mother and rec.merge.genome:
        values = {**options, "base": parents.base}
        cmd = ["darwin", "merge", "--father", parents.father, "--mother", parents.mother,
               "--genome", str(rec.child_dir / file_names.MERGE_RECORD)]
        for key, (flag, default) in MERGE_FLAGS.items():
            if values.get(key) is not None and values.get(key) != default:
                cmd += [flag, str(values[key])]
        cmd += ["--disjoint-mean"] if rec.merge.options.disjoint_mean else []
        vocab = rec.merge.vocabulary
        if vocab is not None and vocab.same is False:
            cmd += ["--tokenizer-source", vocab.tokenizer_source]
        cmd += ["--out", f"{rec.folder_name}-remade"]
        blocks += ["To merge this child again from its parents (the same genome and options "
                   "give a byte-identical child, on any device):",
                   Code("bash", " ".join(shlex.quote(part) for part in cmd))]
    return blocks + _genome_file(rec)


def _genome_file(rec: RunRecords) -> list:
    """The genome as YAML for `darwin merge --genome` (none without a genome)."""
    blocks: list = []
    if rec.genome:
        genome = genome_from_dict({k: v for k, v in rec.genome.items()
                                   if k in Genome.model_fields})
        blocks += ["The genome as a file for `darwin merge --genome`:",
                   Code("yaml", genome.to_yaml())]
    return blocks


def _usage(rec: RunRecords, scratch: Path) -> Section:
    dtype = rec.child_config.get("dtype") or rec.child_config.get("torch_dtype") or "float32"
    lines = ["import torch",
             "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
             f'path = "{rec.folder_name}"  # this folder, or its hub id once uploaded',
             "tokenizer = AutoTokenizer.from_pretrained(path)",
             f"model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.{dtype})", ""]
    if rec.has_chat_template:
        lines += ['messages = [{"role": "user", "content": "What is 17 * 23?"}]',
                  "text = tokenizer.apply_chat_template(messages, tokenize=False, "
                  "add_generation_prompt=True)"]
    else:
        lines += ['text = "Question: What is 17 * 23?\\nAnswer:"']
    lines += ['inputs = tokenizer(text, return_tensors="pt")',
              "outputs = model.generate(**inputs, max_new_tokens=128, do_sample=False)",
              'print(tokenizer.decode(outputs[0][inputs["input_ids"].shape[-1]:], '
              "skip_special_tokens=True))"]
    return Section("Usage with transformers", [Code("python", "\n".join(lines))],
                   anchor="usage")
