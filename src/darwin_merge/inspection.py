"""What a model folder holds, and whether two folders can be merged."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .arch import Taxonomy
from .errors import IncompatibleModelsError
from .io import ModelSource


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


def compare_models(a: ModelSource, b: ModelSource) -> dict:
    """Every difference in tensor names, shapes and dtypes between two sources."""
    names_a, names_b = set(a.names), set(b.names)
    shared = sorted(names_a & names_b)
    shape = [{"name": n, "a": list(a.spec(n).shape), "b": list(b.spec(n).shape)}
             for n in shared if a.spec(n).shape != b.spec(n).shape]
    dtype = [{"name": n, "a": a.spec(n).dtype, "b": b.spec(n).dtype}
             for n in shared if a.spec(n).dtype != b.spec(n).dtype]
    return {
        "mergeable": not (names_a ^ names_b) and not shape,
        "only_in_a": sorted(names_a - names_b),
        "only_in_b": sorted(names_b - names_a),
        "shape_mismatch": shape,
        "dtype_mismatch": dtype,  # allowed: the merge works in float32 and casts back
    }


def require_mergeable(a: ModelSource, b: ModelSource, role_b: str = "mother") -> None:
    """Raise a one-line error naming what differs if `b` cannot be merged with `a`."""
    diff = compare_models(a, b)
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
