"""The merge executor (merge/execute.py, issue 35) against the two engines it replaced, on
SmolLM2: this tree and an older one (`--old TREE`: a checkout, e.g. a `git worktree` at
69c7d87), each case in a fresh process with PYTHONPATH at one tree's src/, alternated and
repeated; seconds of the merge itself (imports and model loading excluded) and the
process's peak RSS, medians, and new / old.

    .venv/bin/python bench/bench_executor.py --old /tmp/old-tree [--repeats 3]

Cases (models: SmolLM2-135M-Instruct as the base and two seeded perturbed copies of it
under .cache/bench/, float32, one torch thread):
* genome-stream: `darwin merge` of a genome with a base (the streaming genome merge);
* ties-yaml, linear-yaml: `darwin merge --mergekit-config` of a TIES (density 0.5) and a
  linear YAML (the mergekit path);
* genome-memory: the search's in-memory genome merge (`merge_state`), 3 merges;
* recipes-memory: the tuned baselines' in-memory standard recipes (`StandardMerger`),
  TIES at density 0.5 and lambdas 0.5, 0.75, 1.0, 1.25 (the memo's path).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
BASE = CACHE / "models" / "smollm2-135m-instruct"
COPIES = {7: CACHE / "bench" / "smollm2-perturbed", 8: CACHE / "bench" / "smollm2-perturbed-8"}

PRELUDE = """
import json, resource, sys, time, yaml
from pathlib import Path
import torch
torch.set_num_threads(1)
base, a, b, out = (Path(p) for p in sys.argv[1:5])
def report(seconds):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mib": rss}))
"""
CASES = {
    "genome-stream": """
from darwin_merge.genome import Genome
from darwin_merge.merge import merge_models
start = time.perf_counter()
merge_models(a, b, out, base=base, genome=Genome(), progress=False, overwrite=True)
report(time.perf_counter() - start)
""",
    "ties-yaml": """
from darwin_merge.mergekit import merge_from_config
config = out.parent / "ties.yaml"
config.write_text(yaml.safe_dump({"merge_method": "ties", "base_model": str(base), "models": [
    {"model": str(a), "parameters": {"weight": 1.0, "density": 0.5}},
    {"model": str(b), "parameters": {"weight": 1.0, "density": 0.5}}]}))
start = time.perf_counter()
merge_from_config(config, out, progress=False, overwrite=True)
report(time.perf_counter() - start)
""",
    "linear-yaml": """
from darwin_merge.mergekit import merge_from_config
config = out.parent / "linear.yaml"
config.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
    {"model": str(a), "parameters": {"weight": 0.3}},
    {"model": str(b), "parameters": {"weight": 0.7}}]}))
start = time.perf_counter()
merge_from_config(config, out, progress=False, overwrite=True)
report(time.perf_counter() - start)
""",
    "genome-memory": """
from darwin_merge.genome import Genome
from darwin_merge.merge.engine import ParentTensors, merge_state
held = ParentTensors.load(a, b, base)
genomes = [Genome(), Genome.uniform(0.5, density=0.9), Genome(merge_method_weight=0.3)]
start = time.perf_counter()
for genome in genomes:
    merge_state(held, genome)
report(time.perf_counter() - start)
""",
    "recipes-memory": """
from darwin_merge.merge.engine import ParentTensors
from darwin_merge.mergekit.standard import StandardMerger, StandardRecipe
merger = StandardMerger(ParentTensors.load(a, b, base))
start = time.perf_counter()
for scale in (0.5, 0.75, 1.0, 1.25):
    merger.state(StandardRecipe(method="ties", density=0.5, scale=scale))
report(time.perf_counter() - start)
""",
}


def ensure_copies() -> None:
    """The two perturbed SmolLM2 copies (seeded), written once."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import perturbed_copy

    for seed, folder in COPIES.items():
        if not folder.exists():
            tmp = folder.parent / f".{folder.name}.tmp"
            perturbed_copy(BASE, tmp, scale=0.02, seed=seed)
            os.rename(tmp, folder)


def run_case(tree: Path, case: str, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE + CASES[case], str(BASE), str(COPIES[7]),
         str(COPIES[8]), str(work / "child")], env=env, capture_output=True, text=True,
        check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="the older tree's root")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ensure_copies()
    trees = {"old": args.old.resolve(), "new": ROOT}
    found = {case: {side: [] for side in trees} for case in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for case in CASES:
                for side, tree in trees.items():  # alternated: old, new, old, new, ...
                    found[case][side].append(run_case(tree, case, Path(tmp)))
    print("| case | old s | new s | new / old | old peak RSS MiB | new peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for case, sides in found.items():
        sec = {s: statistics.median(r["seconds"] for r in runs) for s, runs in sides.items()}
        rss = {s: statistics.median(r["rss_mib"] for r in runs) for s, runs in sides.items()}
        print(f"| {case} | {sec['old']:.2f} | {sec['new']:.2f} | {sec['new'] / sec['old']:.2f} "
              f"| {rss['old']:.0f} | {rss['new']:.0f} |")


if __name__ == "__main__":
    main()
