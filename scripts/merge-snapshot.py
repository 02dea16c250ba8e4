"""Every way darwin makes a child, hashed tensor by tensor: run it on two checkouts and
compare, to show that a change of the merge code (issue 35: one merge description, one
executor) leaves every child the same to the bit.

    python scripts/merge-snapshot.py OUT.json            # this checkout's children
    python scripts/merge-snapshot.py --compare A.json B.json

The merges: `darwin merge` with several genomes (with and without a base and a scan,
disjoint mean, blends, transplants, float64 arithmetic, bfloat16 output, small chunks,
parents with different vocabularies), every mergekit YAML shape the tests run (linear,
task arithmetic with lambda, normalize and negative weights, TIES, DARE-TIES with and
without rescale, per-layer gradients, slices, no base) and the search's in-memory merges
(genomes and the tuned baselines' standard recipes). The tiny models are built here from
fixed seeds (tests/tiny_models.py), so two checkouts on one machine see the same parents.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.gettempdir()) / "darwin-merge-snapshot"
sys.path.insert(0, str(ROOT / "tests"))


def folder_hashes(folder: Path) -> dict[str, str]:
    hashes = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(shard, "pt") as handle:
            for name in handle.keys():
                hashes[name] = tensor_hash(handle.get_tensor(name))
    return hashes


def tensor_hash(tensor: torch.Tensor) -> str:
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode()
                          + data.tobytes()).hexdigest()[:20]


def parents(root: Path) -> dict[str, Path]:
    from tiny_models import make_tiny, perturbed_copy, with_tokens

    base = make_tiny("llama", root / "base", seed=0)
    models = {"base": base,
              "a": perturbed_copy(base, root / "a", scale=0.3, seed=1),
              "b": perturbed_copy(base, root / "b", scale=0.3, seed=2),
              "c": perturbed_copy(base, root / "c", scale=0.3, seed=3)}
    g4 = make_tiny("gemma4_moe", root / "g4", seed=0)
    models.update(g4=g4, g4b=perturbed_copy(g4, root / "g4b", scale=0.2, seed=5))
    models.update(vocab_a=with_tokens(perturbed_copy(base, root / "va", scale=0.3, seed=6),
                                      ["<f1>"]),
                  vocab_b=with_tokens(perturbed_copy(base, root / "vb", scale=0.3, seed=7),
                                      ["<m1>", "<m2>"], rows=130))
    return models


def darwin_merges(models: dict[str, Path], work: Path) -> dict[str, dict[str, str]]:
    from darwin_merge.genome import Genome
    from darwin_merge.merge import merge_models
    from darwin_merge.merge.plan import MergeSettings

    blend = Genome(global_ratio=0.3, attn_ratio=0.8, ffn_ratio=0.2, embed_ratio=0.6,
                   density_a=0.7, density_b=0.4, merge_method_weight=0.6, mri_trust=0.0)
    cases = {
        "default": dict(genome=Genome()),
        "blend-base": dict(genome=blend, base=models["base"]),
        "blend-nobase": dict(genome=blend),
        "linear": dict(genome=Genome.uniform(0.3, merge_method_weight=0.0)),
        "dare-only-base": dict(genome=Genome.uniform(0.5, density=0.5),
                               base=models["base"]),
        "disjoint": dict(genome=blend, base=models["base"],
                         settings=MergeSettings(disjoint_mean=True)),
        "float64": dict(genome=blend, base=models["base"],
                        settings=MergeSettings(compute_dtype="float64")),
        "transplants": dict(genome=Genome(attn_ratio=0.0, ffn_ratio=1.0, mri_trust=0.0),
                            base=models["base"]),
        "bf16-chunks": dict(genome=blend, base=models["base"], dtype="bfloat16",
                            chunk_elements=1000),
        "rule-v1": dict(genome=blend.model_copy(update={"genome_rule": "v1"}),
                        base=models["base"]),
        "gemma4-moe": dict(genome=blend, parents=("g4", "g4b")),
        "vocab-union": dict(genome=blend, parents=("vocab_a", "vocab_b"), chunk_elements=500),
        "vocab-mother": dict(genome=Genome.uniform(0.4, density=0.6), tokenizer_source="mother",
                             parents=("vocab_a", "vocab_b")),
    }
    out = {}
    for name, case in cases.items():
        father, mother = case.pop("parents", ("a", "b"))
        child = merge_models(models[father], models[mother], work / f"darwin-{name}",
                             progress=False, **case)
        out[f"darwin/{name}"] = folder_hashes(child)
    return out


def mergekit_configs(models: dict[str, Path]) -> dict[str, dict]:
    a, b, c, base = (str(models[k]) for k in ("a", "b", "c", "base"))
    gradient = {"weight": [0.2, 0.8]}
    return {
        "linear": {"merge_method": "linear", "models": [
            {"model": a, "parameters": {"weight": 0.3}},
            {"model": b, "parameters": {"weight": 0.7}}]},
        "linear-3-unnormalized": {"merge_method": "linear", "parameters": {"normalize": False},
                                  "models": [{"model": m, "parameters": {"weight": 0.4}}
                                             for m in (a, b, c)]},
        "linear-gradient": {"merge_method": "linear", "models": [
            {"model": a, "parameters": gradient},
            {"model": b, "parameters": {"weight": [0.8, 0.2]}}]},
        "task-arithmetic": {"merge_method": "task_arithmetic", "base_model": base,
                            "parameters": {"lambda": 1.3}, "models": [
                                {"model": a, "parameters": {"weight": 1.0}},
                                {"model": b, "parameters": {"weight": -0.4}}]},
        "task-arithmetic-normalize": {"merge_method": "task_arithmetic", "base_model": base,
                                      "parameters": {"normalize": True}, "models": [
                                          {"model": a, "parameters": {"weight": 0.5}},
                                          {"model": b, "parameters": gradient}]},
        "ties": {"merge_method": "ties", "base_model": base, "models": [
            {"model": a, "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": b, "parameters": {"weight": 0.6, "density": 0.3}},
            {"model": c, "parameters": {"weight": 0.8, "density": 1.0}}]},
        "ties-sum-lambda": {"merge_method": "ties", "base_model": base,
                            "parameters": {"normalize": False, "lambda": 0.8}, "models": [
                                {"model": a, "parameters": {"weight": 1.0, "density": 0.7}},
                                {"model": b, "parameters": {"weight": 1.0, "density": 0.7}}]},
        "dare-ties": {"merge_method": "dare_ties", "base_model": base, "models": [
            {"model": a, "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": b, "parameters": {"weight": 1.0, "density": 0.6}}]},
        "dare-ties-no-rescale": {"merge_method": "dare_ties", "base_model": base,
                                 "parameters": {"rescale": False}, "models": [
                                     {"model": a, "parameters": {"weight": 0.7,
                                                                 "density": 0.5}},
                                     {"model": b, "parameters": {"weight": 0.3,
                                                                 "density": 0.5}}]},
        "ties-slices-bf16": {"merge_method": "ties", "base_model": base, "dtype": "bfloat16",
                             "slices": [{"sources": [
                                 {"model": a, "layer_range": [0, 4],
                                  "parameters": {"weight": 1.0, "density": 0.5}},
                                 {"model": b, "layer_range": [0, 4],
                                  "parameters": {"weight": 1.0, "density": 0.5}}]}]},
        "ties-base-listed": {"merge_method": "ties", "base_model": base, "models": [
            {"model": base},
            {"model": a, "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": b, "parameters": {"weight": 1.0, "density": 0.5}}]},
    }


def mergekit_merges(models: dict[str, Path], work: Path) -> dict[str, dict[str, str]]:
    from darwin_merge.mergekit import merge_from_config

    out = {}
    for name, config in mergekit_configs(models).items():
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        child = merge_from_config(path, work / f"mergekit-{name}", progress=False)
        out[f"mergekit/{name}"] = folder_hashes(child)
    return out


def in_memory_merges(models: dict[str, Path]) -> dict[str, dict[str, str]]:
    from darwin_merge.genome import Genome
    from darwin_merge.merge.engine import ParentTensors, merge_state
    from darwin_merge.mergekit.standard import StandardMerger, StandardRecipe

    out = {}
    for with_base in (True, False):
        held = ParentTensors.load(models["a"], models["b"],
                                  models["base"] if with_base else None)
        tag = "base" if with_base else "nobase"
        state = merge_state(held, Genome(density_a=0.6, density_b=0.8,
                                         merge_method_weight=0.7))
        out[f"memory/genome-{tag}"] = {n: tensor_hash(t) for n, t in state.items()}
        merger = StandardMerger(held)
        for recipe in (StandardRecipe(method="task_arithmetic", scale=0.85),
                       StandardRecipe(method="ties", scale=1.25, density=0.5),
                       StandardRecipe(method="ties", scale=0.75, density=0.5),
                       StandardRecipe(method="dare_ties", scale=1.0, density=0.3)):
            state = merger.state(recipe)
            out[f"memory/{tag}-{recipe.name}"] = {n: tensor_hash(t) for n, t in state.items()}
            out[f"memory/{tag}-{recipe.name}-fingerprint"] = {
                "fingerprint": merger.fingerprint(recipe)}
    return out


def snapshot(out: Path) -> None:
    torch.set_num_threads(1)
    work = WORK  # one fixed folder: a DARE-TIES YAML's masks are seeded by its model paths
    shutil.rmtree(work, ignore_errors=True)
    try:
        models = parents(work / "models")
        result = {**darwin_merges(models, work), **mergekit_merges(models, work),
                  **in_memory_merges(models)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True))
    print(f"{len(result)} children, {sum(len(v) for v in result.values())} tensors -> {out}")


def compare(first: Path, second: Path) -> int:
    a, b = (json.loads(p.read_text()) for p in (first, second))
    found = [f"{case}: only in {first if case in a else second}"
             for case in sorted(set(a) ^ set(b))]
    for case in sorted(set(a) & set(b)):
        differ = [n for n in set(a[case]) | set(b[case]) if a[case].get(n) != b[case].get(n)]
        if differ:
            found.append(f"{case}: {len(differ)} tensor(s) differ, e.g. {sorted(differ)[0]}")
    print("\n".join(found) or f"the same: {len(a)} children, every tensor to the bit")
    return 1 if found else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--compare", action="store_true")
    args = parser.parse_args()
    if args.compare:
        return compare(*args.paths)
    snapshot(args.paths[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
