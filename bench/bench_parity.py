"""Parity: the standard recipes' YAMLs through mergekit itself and through darwin, tensor by
tensor, on SmolLM2-135M-Instruct (the base) and two seeded perturbations of it.

The configs are the baselines' (mergekit/standard.py, `StandardRecipe.mergekit_dict`):
task_arithmetic at lambda 0.7 and 1.3, ties at density 0.5 and 1.0 (lambda 1), float32.
Each runs through `mergekit-yaml` (its own environment, .bench-venv) and `darwin merge
--mergekit-config`; the script prints, per config, the largest absolute difference over
every tensor and how many tensors differ at all.

    .venv/bin/python bench/bench_parity.py

mergekit lives in its own environment, .bench-venv (never a Darwin dependency):
    python3 -m venv .bench-venv && .bench-venv/bin/pip install torch==2.13.0 \\
        && .bench-venv/bin/pip install mergekit
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
BASE = CACHE / "models" / "smollm2-135m-instruct"
MERGEKIT = ROOT / ".bench-venv" / "bin" / "mergekit-yaml"
DARWIN = ROOT / ".venv" / "bin" / "darwin"
TOLERANCE = 1e-6  # issue 34: every tensor within 1e-6 of mergekit's in float32


def perturbed(seed: int) -> Path:
    """A seeded perturbation of the base (scale 0.02), written once, atomically."""
    folder = CACHE / "bench" / f"smollm2-perturbed-{seed}"
    if folder.exists():
        return folder
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import perturbed_copy

    tmp = folder.parent / f".{folder.name}.tmp"
    perturbed_copy(BASE, tmp, scale=0.02, seed=seed)
    os.rename(tmp, folder)
    return folder


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(shard, "pt") as f:
            out.update({name: f.get_tensor(name) for name in f.keys()})  # noqa: SIM118
    return out


def compare(a: Path, b: Path) -> tuple[float, int, int]:
    """(largest |a - b| over every tensor, tensors that differ, tensors compared)."""
    left, right = tensors(a), tensors(b)
    if set(left) != set(right):
        missing = sorted(set(left) ^ set(right))
        raise SystemExit(f"the children hold different tensors: {missing[:3]}")
    worst, differ = 0.0, 0
    for name, tensor in left.items():
        delta = (tensor.float() - right[name].float()).abs().max().item()
        worst = max(worst, delta)
        differ += delta > 0
    return worst, differ, len(left)


def main() -> None:
    from darwin_merge.mergekit.standard import StandardRecipe

    if not MERGEKIT.exists():
        raise SystemExit(f"{MERGEKIT} missing: see this script's docstring")
    father, mother = perturbed(7), perturbed(8)
    points = [StandardRecipe(method="task_arithmetic", scale=0.7),
              StandardRecipe(method="task_arithmetic", scale=1.3),
              StandardRecipe(method="ties", density=0.5),
              StandardRecipe(method="ties", density=1.0)]
    print("| config | max abs difference | tensors that differ | within 1e-6 |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        for point in points:
            config = Path(scratch) / f"{point.name}.yml"
            config.write_text(yaml.safe_dump(
                {**point.mergekit_dict(str(father), str(mother), base=str(BASE)),
                 "dtype": "float32"}))
            theirs, ours = Path(scratch) / f"{point.name}-mergekit", Path(scratch) / point.name
            subprocess.run([str(MERGEKIT), str(config), str(theirs), "--copy-tokenizer"],
                           check=True, capture_output=True)
            subprocess.run([str(DARWIN), "merge", "--mergekit-config", str(config), "--out",
                            str(ours)], check=True, capture_output=True)
            worst, differ, count = compare(theirs, ours)
            print(f"| {point.words()} | {worst:.3g} | {differ} of {count} | "
                  f"{'yes' if worst <= TOLERANCE else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
