"""Token-row tensors of parents whose vocabularies differ, merged row by row.

Each child row takes the father's and the mother's rows for its token (see
darwin_merge.vocab): rows both parents have are merged like any chunk of the tensor
(same merge, same seeded DARE stream); a row one parent alone has is that parent's row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UsageError
from ..io import ModelSource
from ..io.stream import StreamingWriter, TensorReader
from ..io.vocabulary import added_token_entry, read_vocabulary
from ..vocab import VocabAlignment, align_vocabularies, vocab_size_of


@dataclass(frozen=True)
class RowStreams:
    """The alignment and the names of the tensors it applies to."""

    alignment: VocabAlignment | None
    names: frozenset[str]


def parents_vocab_alignment(father: ModelSource, mother: ModelSource,
                            base: ModelSource | None, source: str) -> VocabAlignment | None:
    """The row plan when the parents' vocabularies or row counts differ, else None."""
    first, second = read_vocabulary(father.path), read_vocabulary(mother.path)
    sizes = vocab_size_of(father.config), vocab_size_of(mother.config)
    if first is None or second is None or (first.tokens == second.tokens
                                            and sizes[0] == sizes[1]):
        return None
    if base is not None:
        raise UsageError("parents with different vocabularies cannot be merged with --base "
                         "yet (merge them without a base)")
    return align_vocabularies(first, second, *sizes, source)


def child_files_source(father: ModelSource, mother: ModelSource,
                       alignment: VocabAlignment | None) -> Path:
    """The parent whose tokenizer (and other side files) the child takes."""
    return mother.path if alignment is not None and alignment.source == "mother" \
        else father.path


def new_token_entries(alignment: VocabAlignment, mother: ModelSource) -> list[dict]:
    """tokenizer.json entries for the mother's tokens a union child's tokenizer gains."""
    mother_added = read_vocabulary(mother.path).added
    return [added_token_entry(token, token_id, mother_added.get(token))
            for token, token_id in sorted(alignment.new_tokens.items(), key=lambda kv: kv[1])]


def _read_rows(reader: TensorReader, name: str, rows: list[int], width: int) -> torch.Tensor:
    """Rows of a tensor (in the given order), read in runs of consecutive rows."""
    parts, start = [], 0
    while start < len(rows):
        end = start + 1
        while end < len(rows) and rows[end] == rows[end - 1] + 1:
            end += 1
        parts.append(reader.read(name, rows[start] * width, (end - start) * width))
        start = end
    return torch.cat(parts) if parts else torch.empty(0)


def _block(reader: TensorReader, name: str, rows: tuple[int | None, ...], width: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows present x width in float32, mask of the present rows) for a block of rows."""
    present = torch.tensor([r is not None for r in rows], dtype=torch.bool)
    values = torch.zeros(len(rows), width, dtype=torch.float32)
    if bool(present.any()):
        wanted = [r for r in rows if r is not None]
        values[present] = _read_rows(reader, name, wanted, width).view(-1, width).float()
    return values, present


def stream_vocab_tensor(name: str, shape: tuple[int, ...], readers: list,
                        alignment: VocabAlignment, writer: StreamingWriter,
                        merge: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        chunk_elements: int) -> None:
    """Write one token-row tensor of the child, a block of rows at a time; `merge` makes
    the child's rows from the father's and the mother's (flat, float32; the executor's
    step, its DARE stream carried from block to block).

    A row one parent lacks is filled with the other's row, so the merge sees the same
    row twice there; the child's row is then set to that parent's row exactly.
    """
    width = 1
    for dim in shape[1:]:
        width *= dim
    step = max(1, chunk_elements // max(width, 1))
    for first in range(0, alignment.rows, step):
        a, has_a = _block(readers[0], name, alignment.father_rows[first:first + step], width)
        b, has_b = _block(readers[1], name, alignment.mother_rows[first:first + step], width)
        a[~has_a], b[~has_b] = b[~has_a], a[~has_b]
        child = merge(a.flatten(), b.flatten()).view(-1, width)
        child[~has_b] = a[~has_b].to(child.dtype)
        child[~has_a] = b[~has_a].to(child.dtype)
        writer.write(name, child.flatten())
