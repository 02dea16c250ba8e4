"""Parents whose vocabularies differ: which parent rows make each row of the child.

Pure functions over two vocabularies (token string -> id) and the parents' embedding
row counts. The parents must agree on the tokens they share (same string, same id);
they may each have tokens the other lacks (added tokens). The child's vocabulary is the
father's, the mother's, or their union (`--tokenizer-source`); each of its rows is
aligned by token string: a token both parents know is merged from their two rows, a
token one parent knows is that parent's row. Rows no token uses (padding up to the
config's vocab_size) pair by position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .arch.model_config import declared_size, text_config
from .errors import IncompatibleModelsError, UsageError
from .io.vocabulary import Vocabulary

TokenizerSource = Literal["father", "mother", "union"]
TOKENIZER_SOURCES = ("father", "mother", "union")
SHOWN = 3  # tokens named in a one-line message


@dataclass(frozen=True)
class VocabDiff:
    """How two vocabularies relate (first = father, second = mother)."""

    shared: int
    only_first: tuple[str, ...]
    only_second: tuple[str, ...]
    disagree: tuple[tuple[str, int, int], ...]  # (token, first's id, second's id)

    @property
    def same(self) -> bool:
        return not (self.only_first or self.only_second or self.disagree)

    @property
    def mergeable(self) -> bool:
        return not self.disagree

    def to_dict(self) -> dict:
        return {"same": self.same, "mergeable": self.mergeable, "shared": self.shared,
                "only_first": list(self.only_first), "only_second": list(self.only_second),
                "disagree": [list(d) for d in self.disagree]}


def compare_vocabularies(first: Vocabulary, second: Vocabulary) -> VocabDiff:
    """Shared tokens, tokens of one side only (in id order), tokens whose ids differ."""
    a, b = first.tokens, second.tokens
    shared = a.keys() & b.keys()
    disagree = tuple(sorted(((t, a[t], b[t]) for t in shared if a[t] != b[t]),
                            key=lambda d: d[1]))
    return VocabDiff(len(shared), tuple(sorted(a.keys() - b.keys(), key=a.get)),
                     tuple(sorted(b.keys() - a.keys(), key=b.get)), disagree)


def disagreement_message(diff: VocabDiff) -> str:
    shown = ", ".join(f"{t!r} ({i} vs {j})" for t, i, j in diff.disagree[:SHOWN])
    return (f"the tokenizers disagree on {len(diff.disagree)} shared token(s) (e.g. {shown}): "
            "the same token has another id, so the embeddings cannot be aligned")


@dataclass(frozen=True)
class VocabAlignment:
    """For every row of the child's vocabulary tensors, the father's and mother's row."""

    source: str
    father_rows: tuple[int | None, ...]
    mother_rows: tuple[int | None, ...]
    new_tokens: dict[str, int]  # tokens the child's tokenizer gains over the source's
    diff: VocabDiff

    @property
    def rows(self) -> int:
        return len(self.father_rows)

    def summary(self) -> dict:
        both = sum(f is not None and m is not None for f, m in
                   zip(self.father_rows, self.mother_rows, strict=True))
        return {"tokenizer_source": self.source, "rows": self.rows, "merged_rows": both,
                "father_only_tokens": list(self.diff.only_first),
                "mother_only_tokens": list(self.diff.only_second),
                "tokens_added_to_tokenizer": dict(self.new_tokens)}


def _union_ids(father: Vocabulary, mother: Vocabulary) -> tuple[dict[str, int], dict[str, int]]:
    """Union ids: the father's, then the mother-only tokens in her id order, appended.

    Appended right after the father's last id, as a tokenizer numbers the tokens it
    adds (tokenizer.json cannot keep an added token at an id of its choosing).
    """
    ids = dict(father.tokens)
    next_id = max(ids.values(), default=-1) + 1
    new = {}
    for offset, token in enumerate(sorted(mother.tokens.keys() - father.tokens.keys(),
                                          key=mother.tokens.get)):
        ids[token] = new[token] = next_id + offset
    return ids, new


def vocab_size_of(config: dict) -> int | None:
    """The embedding row count a config declares (top level or its text sub-config)."""
    return declared_size(config, "vocab_size")


def with_vocab_size(config: dict, rows: int) -> dict:
    """A copy of a config declaring `rows` embedding rows where it declared its own."""
    config = dict(config)
    if isinstance(config.get("vocab_size"), int):
        config["vocab_size"] = rows
    elif text_config(config) is not config:  # a multimodal model's language sizes
        config["text_config"] = {**text_config(config), "vocab_size": rows}
    return config


def vocab_tensor_names(infos, shapes: dict[str, tuple[int, ...]], size: int | None
                       ) -> set[str]:
    """Embedding-component tensors with one row per token (first dimension = `size`)."""
    return {i.name for i in infos if i.component == "embed" and shapes.get(i.name, ())[:1]
            == (size,)}


def _parent_rows(child_ids: dict[str, int], rows: int, parent: Vocabulary, parent_size: int
                 ) -> tuple[int | None, ...]:
    """The parent's row for each child row: by token string, or by position if unused."""
    token_at = {i: t for t, i in child_ids.items()}
    parent_token_rows = set(parent.tokens.values())
    out = []
    for row in range(rows):
        token = token_at.get(row)
        if token is not None:
            out.append(parent.tokens.get(token))
        elif row < parent_size and row not in parent_token_rows:
            out.append(row)  # padding row in both: pair by position
        else:
            out.append(None)
    return tuple(out)


def align_vocabularies(father: Vocabulary, mother: Vocabulary, father_size: int,
                       mother_size: int, source: str = "union") -> VocabAlignment:
    """The child's row plan; refuses parents that disagree on a shared token."""
    if source not in TOKENIZER_SOURCES:
        raise UsageError(f"--tokenizer-source must be one of {', '.join(TOKENIZER_SOURCES)}")
    diff = compare_vocabularies(father, mother)
    if not diff.mergeable:
        raise IncompatibleModelsError(disagreement_message(diff))
    new: dict[str, int] = {}
    if source == "father":
        ids, rows = father.tokens, father_size
    elif source == "mother":
        ids, rows = mother.tokens, mother_size
    else:
        ids, new = _union_ids(father, mother)
        rows = max(father_size, mother_size)
    rows = max(rows, *(i + 1 for i in ids.values()))
    father_rows = _parent_rows(ids, rows, father, father_size)
    mother_rows = _parent_rows(ids, rows, mother, mother_size)
    for row, (f, m) in enumerate(zip(father_rows, mother_rows, strict=True)):
        if f is None and m is None:
            raise IncompatibleModelsError(f"row {row} of the child's vocabulary has no row in "
                                          "either parent")
    return VocabAlignment(source, father_rows, mother_rows, new, diff)
