"""What a model folder holds, and whether two folders can be merged."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.table import Table

from .arch import Taxonomy
from .errors import IncompatibleModelsError
from .io import ModelSource
from .io.vocabulary import read_vocabulary
from .vocab import VocabDiff, compare_vocabularies, disagreement_message, vocab_size_of


def inspect_model(path: str | Path) -> dict:
    """Architecture, size, dtypes and every tensor's place in the taxonomy."""
    with ModelSource(path) as source:
        taxonomy = Taxonomy(source.config)
        infos = taxonomy.classify_all(source.specs())
        specs = {s.name: s for s in source.specs()}
        unclassified_decoder = [i.name for i in infos
                                if i.component == "other" and i.layer is not None]
        return {
            "path": str(path),
            "architectures": source.config.get("architectures") or [],
            "model_type": source.config.get("model_type"),
            "family": taxonomy.family,
            "num_layers": taxonomy.num_layers,
            "num_tensors": len(infos),
            "num_params": source.num_params,
            "dtypes": dict(Counter(s.dtype for s in specs.values())),
            "components": dict(Counter(i.component for i in infos)),
            "unclassified": [i.name for i in infos if i.component == "other"],
            "unclassified_decoder": unclassified_decoder,
            "tensors": [
                {**i.to_dict(), "shape": list(specs[i.name].shape), "dtype": specs[i.name].dtype}
                for i in infos
            ],
        }


def vocabulary_diff(a: ModelSource, b: ModelSource) -> VocabDiff | None:
    """How the parents' tokenizers differ; None when either folder has no tokenizer.json."""
    first, second = read_vocabulary(a.path), read_vocabulary(b.path)
    if first is None or second is None:
        return None
    return compare_vocabularies(first, second)


def _one_row_per_token(source: ModelSource, name: str) -> bool:
    """An embedding-component tensor whose first dimension is the config's vocab_size."""
    shape = source.spec(name).shape
    return (bool(shape) and shape[0] == vocab_size_of(source.config)
            and Taxonomy(source.config).component_of(name) == "embed")


def _vocab_rows_only(a: ModelSource, b: ModelSource, name: str) -> bool:
    """Shapes that differ only in the number of token rows."""
    sa, sb = a.spec(name).shape, b.spec(name).shape
    return (len(sa) == len(sb) and sa[1:] == sb[1:] and _one_row_per_token(a, name)
            and _one_row_per_token(b, name))


def compare_models(a: ModelSource, b: ModelSource) -> dict:
    """Every difference in tensor names, shapes, dtypes and vocabularies of two sources.

    Token-row counts that differ are no obstacle when the tokenizers agree on their
    shared tokens: `darwin merge` aligns the rows by token string (docs/MERGE.md).
    """
    names_a, names_b = set(a.names), set(b.names)
    shared = sorted(names_a & names_b)
    vocab = vocabulary_diff(a, b)
    alignable = vocab is not None and vocab.mergeable
    differ = [n for n in shared if a.spec(n).shape != b.spec(n).shape]
    vocab_rows = [n for n in differ if alignable and _vocab_rows_only(a, b, n)]
    shape = [{"name": n, "a": list(a.spec(n).shape), "b": list(b.spec(n).shape)}
             for n in differ if n not in vocab_rows]
    dtype = [{"name": n, "a": a.spec(n).dtype, "b": b.spec(n).dtype}
             for n in shared if a.spec(n).dtype != b.spec(n).dtype]
    return {
        "mergeable": not (names_a ^ names_b) and not shape and (vocab is None
                                                                 or vocab.mergeable),
        "only_in_a": sorted(names_a - names_b),
        "only_in_b": sorted(names_b - names_a),
        "shape_mismatch": shape,
        "dtype_mismatch": dtype,  # allowed: the merge works in float32 and casts back
        "vocab_rows_differ": vocab_rows,  # aligned by token string when merging
        "vocabulary": None if vocab is None else vocab.to_dict(),
    }


def require_mergeable(a: ModelSource, b: ModelSource, role_b: str = "mother",
                      align_vocab: bool = False) -> None:
    """Raise a one-line error naming what differs if `b` cannot be merged with `a`.

    Different vocabularies pass only with `align_vocab` (the streaming merge aligns
    them; the in-memory merge of the search does not).
    """
    diff = compare_models(a, b)
    vocab = diff["vocabulary"]
    if vocab is not None and not vocab["mergeable"]:
        raise IncompatibleModelsError(f"{a.path} and {b.path} cannot be merged: " +
                                      disagreement_message(vocabulary_diff(a, b)))
    if not align_vocab and vocab is not None and (not vocab["same"]
                                                  or diff["vocab_rows_differ"]):
        raise IncompatibleModelsError(
            f"{a.path} and {b.path} have different vocabularies; `darwin merge` aligns them "
            "by token string, the search needs one vocabulary (see docs/MERGE.md, "
            "'Different vocabularies')")
    if diff["mergeable"]:
        return
    parts = []
    if diff["only_in_a"]:
        parts.append(f"{len(diff['only_in_a'])} tensor(s) only in the father "
                     f"(e.g. {diff['only_in_a'][0]})")
    if diff["only_in_b"]:
        parts.append(f"{len(diff['only_in_b'])} tensor(s) only in the {role_b} "
                     f"(e.g. {diff['only_in_b'][0]})")
    if diff["shape_mismatch"]:
        first = diff["shape_mismatch"][0]
        parts.append(f"{len(diff['shape_mismatch'])} shape mismatch(es) (e.g. {first['name']}: "
                     f"{first['a']} vs {first['b']})")
        if any("embed" in d["name"] or "lm_head" in d["name"] for d in diff["shape_mismatch"]):
            parts.append("vocabularies differ: resize both to one tokenizer first "
                         "(see docs/MERGE.md, 'Different vocabularies')")
    raise IncompatibleModelsError(f"{a.path} and {b.path} cannot be merged: " + "; ".join(parts))


def dash(value) -> str:
    """A table cell: the value as text, `-` for None."""
    return "-" if value is None else str(value)


def inspection_summary(report: dict, all_tensors: bool) -> list:
    """`darwin inspect`'s text for one model (rich markup lines and the tensor table):
    layers 0 and last only, unless `all_tensors`."""
    items: list = [
        f"[bold]{report['path']}[/bold]",
        f"  architecture: {', '.join(report['architectures']) or '?'} "
        f"(model_type {report['model_type']}, family {report['family']})",
        f"  parameters: {report['num_params']:,} in {report['num_tensors']} tensors; "
        f"dtypes {report['dtypes']}; decoder layers {report['num_layers']}",
        f"  components: {report['components']}"]
    if report["unclassified"]:
        items.append(f"  [yellow]unclassified (merged with global_ratio): "
                     f"{len(report['unclassified'])}[/yellow]")
    table = Table(show_lines=False)
    for col in ("tensor", "component", "layer", "block", "merge", "shape", "dtype"):
        table.add_column(col)
    rows = report["tensors"] if all_tensors else _first_and_last_layers(report["tensors"])
    for t in rows:
        table.add_row(t["name"], t["component"], dash(t["layer"]), dash(t["block"]),
                      t["merge_kind"], "x".join(map(str, t["shape"])) or "scalar", t["dtype"])
    items.append(table)
    if not all_tensors and len(rows) < len(report["tensors"]):
        items.append(f"  (layers 0 and last shown; --all lists all {report['num_tensors']} "
                     "tensors)")
    return items


def _first_and_last_layers(tensors: list[dict]) -> list[dict]:
    layers = [t["layer"] for t in tensors if t["layer"] is not None]
    keep = {min(layers), max(layers)} if layers else set()
    return [t for t in tensors if t["layer"] is None or t["layer"] in keep]


def comparison_summary(diff: dict) -> list[str]:
    """`darwin inspect A B`'s verdict lines (rich markup) from `compare_models`."""
    lines = _vocabulary_lines(diff["vocabulary"], diff["vocab_rows_differ"])
    if diff["mergeable"]:
        lines.append("[green]mergeable[/green]: same tensor names and shapes"
                     + (" (token rows aligned by token string)" if diff["vocab_rows_differ"]
                        else ""))
        if diff["dtype_mismatch"]:
            lines.append(f"  (dtypes differ on {len(diff['dtype_mismatch'])} tensors; the "
                         "merge computes in float32)")
        return lines
    lines.append("[red]not mergeable[/red]")
    lines += [f"  only in first: {n}" for n in diff["only_in_a"]]
    lines += [f"  only in second: {n}" for n in diff["only_in_b"]]
    lines += [f"  shape differs: {d['name']}: {d['a']} vs {d['b']}"
              for d in diff["shape_mismatch"]]
    return lines


def _vocabulary_lines(vocab: dict | None, row_tensors: list[str]) -> list[str]:
    if vocab is None:
        return ["vocabulary: not compared (a folder has no tokenizer.json)"]
    if vocab["same"]:
        return [f"vocabulary: the same ({vocab['shared']:,} tokens)"]
    lines = [f"vocabulary: {vocab['shared']:,} shared tokens, "
             f"{len(vocab['only_first'])} only in first {vocab['only_first'][:3]}, "
             f"{len(vocab['only_second'])} only in second {vocab['only_second'][:3]}"]
    if vocab["mergeable"]:
        lines.append(f"  [green]can be merged[/green]: shared tokens have the same ids; "
                     f"{len(row_tensors)} token-row tensor(s) aligned by token string "
                     "(--tokenizer-source father|mother|union)")
    else:
        shown = ", ".join(f"{t!r} ({i} vs {j})" for t, i, j in vocab["disagree"][:3])
        lines.append(f"  [red]cannot be merged[/red]: {len(vocab['disagree'])} shared "
                     f"token(s) have different ids, e.g. {shown}")
    return lines
