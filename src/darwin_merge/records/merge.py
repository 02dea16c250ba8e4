"""darwin_merge.json: what a merge wrote beside the child, enough to understand and redo it."""

from __future__ import annotations

from . import file_names
from .base import SCHEMA_VERSION, GenomeValues, Number, Part, Record


class MergeParents(Part):
    """The parents by role: father and mother, or `models` (N parents given as --model, in
    order: roles model_1 .. model_N), and the base."""

    omitted_when_none = ("models",)

    father: str | None = None
    mother: str | None = None
    base: str | None = None
    models: list[str] | None = None


class MergeOptions(Part):
    """MergeSettings' fields and how the merge ran (device, output dtype, scan file)."""

    transplant_low: Number | None = None
    transplant_high: Number | None = None
    disjoint_mean: bool = False
    compute_dtype: str | None = None
    device: str | None = None
    dtype: str | None = None
    scan: str | None = None


class VocabularyRecord(Part):
    """The child's tokenizer: the father's when the parents share a vocabulary, else the
    alignment's summary (vocab.VocabAlignment.summary) with `same` false."""

    omitted_when_none = ("rows", "merged_rows", "father_only_tokens", "mother_only_tokens",
                         "tokens_added_to_tokenizer")

    tokenizer_source: str
    rows: int | None = None
    merged_rows: int | None = None
    father_only_tokens: list[str] | None = None
    mother_only_tokens: list[str] | None = None
    tokens_added_to_tokenizer: dict[str, int] | None = None
    same: bool


class TensorPlace(Part):
    """Where a tensor of a plan sits (arch.taxonomy.TensorInfo) and its shape."""

    name: str
    component: str
    layer: int | None
    block: int | None
    merge_kind: str
    shape: list[int]


class TensorRow(TensorPlace):
    """One tensor of the plan (merge.plan.PlanRow)."""

    genome_ratio: Number
    mri_ratio: Number | None
    final_ratio: Number
    mode: str


class SharesTensorRow(TensorPlace):
    """One tensor of an N-parent plan (merge.multi_plan.SharesRow): each parent's share, in
    the parents' order, and for a transplant the index of the parent whose tensor it is."""

    shares: list[Number]
    mode: str
    taken: int | None


class MergeRecord(Record):
    """darwin_merge.json. Two parents: `genome` (its values) and `tensors`; N parents
    (`parents.models`): `genome` holds the shared genes, `parent_genes` each parent's and
    `tensor_shares` the plan."""

    file_name = file_names.MERGE_RECORD
    omitted_when_none = ("parent_genes", "tensor_shares")

    darwin_version: str | None = None
    genome: GenomeValues = {}
    genome_rule: str | None = None
    genome_hash: str | None = None
    parents: MergeParents = MergeParents()
    options: MergeOptions = MergeOptions()
    ratio_source: str | None = None
    modes: dict[str, int] = {}
    vocabulary: VocabularyRecord | None = None
    unclassified: list[str] = []
    tensors: list[TensorRow] = []
    parent_genes: list[dict[str, Number]] | None = None
    tensor_shares: list[SharesTensorRow] | None = None
    schema_version: int = SCHEMA_VERSION
