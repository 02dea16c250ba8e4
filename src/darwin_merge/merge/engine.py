"""A genome's merge of two parent folders: streamed to disk (`merge_models`, `darwin
merge`) or in memory (`merge_state`, the search).

Both plan the merge (merge/plan.py), compile the plan to the merge description
(`spec_of_plan`) and run it with the one executor (merge/execute.py), so the search's
in-memory child and the written child are the same numbers. DARE's masks are seeded from
(genome_hash, tensor name, parent) on the CPU, so the child does not depend on the device,
the thread count or the order in which tensors are merged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__
from ..arch import Taxonomy
from ..arch.taxonomy import TensorInfo
from ..errors import UsageError
from ..genome import Genome, genome_hash
from ..io.dtypes import main_dtype, parse_dtype
from ..io.loading import resolve_device
from ..io.stream import TensorReader
from ..io.vocabulary import add_tokens
from ..io.writer import (
    DEFAULT_SHARD_BYTES,
    atomic_output_dir,
    copy_side_files,
    write_config,
)
from ..multi_genome import MultiGenome
from ..records import (
    MergeOptions,
    MergeParents,
    MergeRecord,
    SharesTensorRow,
    TensorRow,
    VocabularyRecord,
    file_names,
    record_text,
)
from ..resources import require_disk, require_memory, tensor_bytes
from ..vocab import VocabAlignment, vocab_size_of, vocab_tensor_names, with_vocab_size
from .execute import CHUNK_ELEMENTS, cpu_threads, merge_in_memory, write_child_tensors
from .multi_plan import (
    SharesRow,
    model_roles,
    plan_shares,
    require_genes_for,
    spec_of_shares,
)
from .plan import (
    MergeSettings,
    PlanRow,
    load_scan_ratios,
    open_models,
    open_parents,
    plan_merge,
    spec_of_plan,
)
from .vocab_rows import (
    RowStreams,
    child_files_source,
    new_token_entries,
    parents_vocab_alignment,
)


# -- in memory (the search) ---------------------------------------------------------
@dataclass(frozen=True)
class ParentTensors:
    """Both parents' (and the base's) tensors read once and kept on one device. A parent's
    tensor equal to the base's, to the bit, is the base's tensor object (one copy; the
    merge skips its zero task vector's work): treat every tensor as read-only."""

    father: dict[str, torch.Tensor]
    mother: dict[str, torch.Tensor]
    base: dict[str, torch.Tensor] | None
    infos: list[TensorInfo]
    config: dict
    father_path: Path

    @classmethod
    def load(cls, father: str | Path, mother: str | Path, base: str | Path | None = None,
             device: str = "cpu", dtype: str | None = None) -> ParentTensors:
        """Read every tensor (optionally cast float ones to `dtype`) onto `device`.

        Refused with ResourceError before any tensor is read when the parents and one
        child (sizes from the headers) exceed the memory `device` has free.
        """
        target = resolve_device(device)
        cast = parse_dtype(dtype) if dtype else None
        sources = open_parents(father, mother, base)
        try:
            present = [s for s in sources if s is not None]
            # the parents, plus one child of the father's size built from them
            needed = sum(tensor_bytes(s.specs(), cast) for s in present) + tensor_bytes(
                sources[0].specs(), cast)
            require_memory(needed, target, f"the parents ({len(present)} models) and a child")

            def read(source):
                if source is None:
                    return None
                return {n: _placed(source.get(n), target, cast) for n in source.names}

            a, b, w = (read(s) for s in sources)
            if w is not None:
                a, b = _shared_with_base(a, w), _shared_with_base(b, w)
            infos = Taxonomy(sources[0].config).classify_all(sources[0].specs())
            return cls(a, b, w, infos, dict(sources[0].config), Path(father))
        finally:
            for source in sources:
                if source is not None:
                    source.close()

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(t.shape) for n, t in self.father.items()}


def _shared_with_base(parent: dict[str, torch.Tensor], base: dict[str, torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
    """The parent's tensors, each one equal to the base's (a tensor the fine-tune left as it
    was: half of each specialist of the demo's disjoint pair) replaced by the base's tensor
    itself: one copy in memory, and a merge that sees `parent is base` skips its zero task
    vector's draw (merge/ops.py)."""
    return {name: base[name] if name in base and same_bits(base[name], tensor) else tensor
            for name, tensor in parent.items()}


def same_bits(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Equal to the bit (torch.equal calls -0.0 and 0.0 equal, and NaN unequal)."""
    if x.dtype != y.dtype or x.shape != y.shape or x.device != y.device:
        return False
    return torch.equal(x.contiguous().flatten().view(torch.uint8),
                       y.contiguous().flatten().view(torch.uint8))


def _placed(tensor: torch.Tensor, device: torch.device, cast: torch.dtype | None):
    if cast is not None and tensor.is_floating_point():
        tensor = tensor.to(cast)
    return tensor.to(device)


def merge_state(parents: ParentTensors, genome: Genome,
                mri_ratios: dict[str, float] | None = None,
                settings: MergeSettings | None = None,
                out_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The child's state dict, in memory on the parents' device (no disk I/O).

    Transplanted tensors are the parents' own tensors (no copy, to save device memory):
    treat the result as read-only, as a model built from it for evaluation does.
    """
    settings = settings or MergeSettings()
    rows = plan_merge(parents.infos, parents.shapes(), genome, settings, mri_ratios)
    spec = spec_of_plan(rows, genome, settings, genome_hash(genome, settings),
                        with_base=parents.base is not None)
    held = {"father": parents.father, "mother": parents.mother, "base": parents.base}
    return merge_in_memory(spec, lambda model, name: held[model][name], out_dtype)


def merge_state_multi(models: Mapping[str, Mapping[str, torch.Tensor]], roles: tuple[str, ...],
                      infos: list[TensorInfo], genome: MultiGenome,
                      settings: MergeSettings | None = None,
                      out_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """An N-parent genome's child in memory (multi_genome.py): `models` holds each role's
    tensors, in the genome's parents' order, and the base's under "base" when there is one.
    Read-only, as `merge_state`'s."""
    settings = settings or MergeSettings()
    shapes = {n: tuple(t.shape) for n, t in models[roles[0]].items()}
    rows = plan_shares(infos, shapes, genome, settings)
    spec = spec_of_shares(rows, genome, settings, roles, with_base="base" in models)
    return merge_in_memory(spec, lambda model, name: models[model][name], out_dtype)


# -- streaming to disk (the CLI) ----------------------------------------------------
def merge_models(father: str | Path, mother: str | Path, out: str | Path, *,
                 base: str | Path | None = None, genome: Genome | None = None,
                 scan: str | Path | None = None, settings: MergeSettings | None = None,
                 device: str = "cpu", dtype: str | None = None, overwrite: bool = False,
                 progress: bool = True, shard_size: int = DEFAULT_SHARD_BYTES,
                 chunk_elements: int = CHUNK_ELEMENTS, threads: int | None = 1,
                 allow_pickle: bool = False, trust_remote_code: bool = False,
                 tokenizer_source: str = "union") -> Path:
    """Merge two model folders into a new child folder, one tensor chunk at a time.

    Peak memory is a few chunks of `chunk_elements` (whatever the model's size): the
    parents are read with plain reads and the child streamed into its shards. The
    child gets the father's config (dtype updated), tokenizer and chat template, and
    darwin_merge.json. `threads` is torch's CPU thread count during the merge (None:
    unchanged): chunks are small and memory-bound, so one thread is the default
    (docs/BENCHMARKS.md). The result is the same for any value. `allow_pickle` and
    `trust_remote_code` let untrusted parents be read (docs/RELIABILITY.md). Parents
    whose vocabularies differ get their token rows aligned by token string; the child's
    vocabulary is `tokenizer_source`'s: father, mother or union (docs/MERGE.md).
    """
    genome, settings = genome or Genome(), settings or MergeSettings()
    out = Path(out)
    _refuse_parent_as_output(out, [father, mother, base])
    target_device = resolve_device(device)
    out_dtype = parse_dtype(dtype) if dtype else None
    a, b, w = open_parents(father, mother, base, allow_pickle=allow_pickle,
                           trust_remote_code=trust_remote_code, align_vocab=True)
    try:
        alignment = parents_vocab_alignment(a, b, w, tokenizer_source)
        ratios = load_scan_ratios(scan) if scan is not None else None
        specs = a.specs()
        infos = Taxonomy(a.config).classify_all(specs)
        shapes = {s.name: s.shape for s in specs}
        vocab_names = set() if alignment is None else vocab_tensor_names(
            infos, shapes, vocab_size_of(a.config))
        shapes.update({n: (alignment.rows, *shapes[n][1:]) for n in vocab_names})
        rows = plan_merge(infos, shapes, genome, settings, ratios)
        key = genome_hash(genome, settings)
        require_disk(out, a.total_bytes if out_dtype is None else
                      a.num_params * torch.finfo(out_dtype).bits // 8)
        spec = spec_of_plan(rows, genome, settings, key, with_base=w is not None)
        with atomic_output_dir(out, overwrite=overwrite) as tmp, cpu_threads(threads):
            readers = {m: TensorReader(s) for m, s in zip(spec.models, (a, b, w)[:len(spec.models)],
                                                           strict=True)}
            try:
                write_child_tensors(spec, readers, tmp, out_dtype, target_device, shard_size,
                                    chunk_elements, progress,
                                    RowStreams(alignment, frozenset(vocab_names)))
            finally:
                for reader in readers.values():
                    reader.close()
            config = a.config if alignment is None else with_vocab_size(a.config,
                                                                        alignment.rows)
            write_config(config, tmp, out_dtype or main_dtype(a))
            copy_side_files(child_files_source(a, b, alignment), tmp)
            if alignment is not None and alignment.new_tokens:
                add_tokens(tmp, new_token_entries(alignment, b))
            report = merge_report(rows, genome, settings, key, (father, mother, base), scan,
                                  device, dtype, alignment)
            (tmp / file_names.MERGE_RECORD).write_text(record_text(report, indent=1))
    finally:
        for source in (a, b, w):
            if source is not None:
                source.close()
    return out


def _refuse_parent_as_output(out: Path, parents: list) -> None:
    for parent in parents:
        if parent is not None and Path(parent).resolve() == out.resolve():
            raise UsageError(f"{out}: the output folder is one of the parents")


def merge_report(rows: list[PlanRow], genome: Genome, settings: MergeSettings, key: str,
                 parents: tuple, scan, device: str, dtype: str | None,
                 alignment: VocabAlignment | None = None) -> MergeRecord:
    """What darwin_merge.json holds: enough to understand and redo the merge."""
    modes: dict[str, int] = {}
    for row in rows:
        modes[row.mode] = modes.get(row.mode, 0) + 1
    father, mother, base = (None if p is None else str(p) for p in parents)
    return MergeRecord(
        darwin_version=__version__,
        genome=genome.model_dump(),
        genome_rule=genome.genome_rule,
        genome_hash=key,
        parents=MergeParents(father=father, mother=mother, base=base),
        options=MergeOptions(**settings.model_dump(), device=str(device), dtype=dtype,
                             scan=None if scan is None else str(scan)),
        ratio_source="genome and scan (mri_trust)" if scan is not None else
                     "genome only (no scan given)",
        modes=modes,
        vocabulary=(VocabularyRecord(tokenizer_source="father", same=True) if alignment is None
                    else VocabularyRecord(**alignment.summary(), same=False)),
        unclassified=[r.name for r in rows if r.component == "other"],
        tensors=[TensorRow(**r.to_dict()) for r in rows],
    )


def merge_models_multi(models: list, out: str | Path, *, genome: MultiGenome,
                       base: str | Path | None = None, settings: MergeSettings | None = None,
                       device: str = "cpu", dtype: str | None = None, overwrite: bool = False,
                       progress: bool = True, shard_size: int = DEFAULT_SHARD_BYTES,
                       chunk_elements: int = CHUNK_ELEMENTS, threads: int | None = 1,
                       allow_pickle: bool = False, trust_remote_code: bool = False) -> Path:
    """Merge N model folders (`--model`, roles model_1 .. model_N) with an N-parent genome
    into a new child folder, streamed as `merge_models` streams two: the same executor,
    checks, temporary folder and shards. The models must share one vocabulary (the child
    takes the first one's config and tokenizer); darwin_merge.json names every parent by
    role and path and holds the plan's shares."""
    settings = settings or MergeSettings()
    out = Path(out)
    require_genes_for(genome, len(models))
    _refuse_parent_as_output(out, [*models, base])
    roles = model_roles(len(models))
    sources = open_models([*models, *([base] if base is not None else [])],
                          roles + (("base",) if base is not None else ()),
                          allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    first = sources[0]
    try:
        specs = first.specs()
        rows = plan_shares(Taxonomy(first.config).classify_all(specs),
                           {s.name: s.shape for s in specs}, genome, settings)
        spec = spec_of_shares(rows, genome, settings, roles, with_base=base is not None)
        out_dtype = parse_dtype(dtype) if dtype else None
        require_disk(out, first.total_bytes if out_dtype is None else
                     first.num_params * torch.finfo(out_dtype).bits // 8)
        with atomic_output_dir(out, overwrite=overwrite) as tmp, cpu_threads(threads):
            readers = {m: TensorReader(s) for m, s in zip(spec.models, sources, strict=True)}
            try:
                write_child_tensors(spec, readers, tmp, out_dtype, resolve_device(device),
                                    shard_size, chunk_elements, progress)
            finally:
                for reader in readers.values():
                    reader.close()
            write_config(first.config, tmp, out_dtype or main_dtype(first))
            copy_side_files(first.path, tmp)
            report = multi_merge_report(rows, genome, settings, models, base, device, dtype)
            (tmp / file_names.MERGE_RECORD).write_text(record_text(report, indent=1))
    finally:
        for source in sources:
            source.close()
    return out


def multi_merge_report(rows: list[SharesRow], genome: MultiGenome, settings: MergeSettings,
                       models: list, base, device: str, dtype: str | None) -> MergeRecord:
    """darwin_merge.json of an N-parent merge: the parents by role (`models`, in order), the
    shared genes, each parent's genes and every tensor's shares."""
    modes: dict[str, int] = {}
    for row in rows:
        modes[row.mode] = modes.get(row.mode, 0) + 1
    shared = genome.model_dump(exclude={"parents"})
    return MergeRecord(
        darwin_version=__version__, genome=shared, genome_rule=genome.genome_rule,
        parents=MergeParents(models=[str(m) for m in models],
                             base=None if base is None else str(base)),
        options=MergeOptions(**settings.model_dump(), device=str(device), dtype=dtype),
        ratio_source="N-parent genome (no scan)", modes=modes,
        vocabulary=VocabularyRecord(tokenizer_source="model_1", same=True),
        unclassified=[r.name for r in rows if r.info.component == "other"],
        parent_genes=[p.model_dump() for p in genome.parents],
        tensor_shares=[SharesTensorRow(**r.to_dict()) for r in rows])
