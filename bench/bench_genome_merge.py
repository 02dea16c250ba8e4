"""The search's in-memory genome merge (`merge_state`, what every Phase 2 candidate and
fixed genome baseline costs) on a finished run's parents, two ways in turn on the same
loaded tensors:

* shared: `ParentTensors.load` as the search holds them, every parent tensor equal to the
  base's (to the bit) being the base's own object, so the fused DARE-TIES merge skips that
  zero task vector's draw and sign election (merge/ops.py `_merge_one_task_vector`);
* copies: the same tensors with every shared one cloned, which is how parents were held
  before (c3ef64e): every tensor takes the general path.

Both must give the same child to the bit (checked on every genome). Prints seconds per
merge for each, and the parents' bytes in memory.

    .venv/bin/python bench/bench_genome_merge.py runs/demo-smollm2 [--rounds 3]

The run folder's recipe.yaml names the parents, its scan the MRI ratios; the genomes are
the run's best genome, the default genome and the fixed DARE-TIES 0.5 baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
import yaml

from darwin_merge.evolve.baselines import FIXED_GENOMES
from darwin_merge.genome import Genome, load_genome
from darwin_merge.merge.engine import ParentTensors, merge_state, same_bits
from darwin_merge.merge.plan import load_scan_ratios
from darwin_merge.records import file_names


def copies(parents: ParentTensors) -> ParentTensors:
    """The parents with every tensor they share with the base cloned (held as before)."""
    def unshared(parent):
        return {n: t.clone() if t is parents.base[n] else t for n, t in parent.items()}

    return dataclasses.replace(parents, father=unshared(parents.father),
                               mother=unshared(parents.mother))


def held_bytes(parents: ParentTensors) -> int:
    """Bytes of the distinct tensors held (a shared tensor counted once)."""
    seen = {id(t): t for part in (parents.father, parents.mother, parents.base or {})
            for t in part.values()}
    return sum(t.numel() * t.element_size() for t in seen.values())


def same_child(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(same_bits(a[n], b[n]) for n in a)


def run_arguments(doc: str) -> argparse.Namespace:
    """A bench's command line: a finished run's folder and `--rounds`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def run_parents(run: Path) -> tuple[ParentTensors, dict[str, float]]:
    """A finished run's parents, held as its search holds them, and its scan's ratios."""
    recipe = yaml.safe_load((run / file_names.RECIPE).read_text())
    parents = ParentTensors.load(recipe["father"], recipe["mother"], recipe["base"],
                                 dtype=recipe.get("dtype"))
    return parents, load_scan_ratios(run / file_names.SCAN_DIR / file_names.SCAN)


def seconds_per_merge(ways: dict[str, tuple[ParentTensors, list[Genome]]],
                      ratios: dict[str, float], rounds: int) -> dict[str, float]:
    """Each way's seconds per in-memory merge (its genomes on its parents), the ways timed
    in turn in every round; the best round of each."""
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, (parents, genomes) in ways.items():
            started = time.perf_counter()
            for genome in genomes:
                merge_state(parents, genome, ratios)
            seconds[name].append((time.perf_counter() - started) / len(genomes))
    return {name: min(values) for name, values in seconds.items()}


def main() -> None:
    args = run_arguments(__doc__)
    shared, ratios = run_parents(args.run)
    copied = copies(shared)
    genomes = [load_genome(args.run / file_names.BEST_GENOME), Genome(),
               FIXED_GENOMES["dare_ties_0.5"]]
    for genome in genomes:
        assert same_child(merge_state(shared, genome, ratios), merge_state(copied, genome, ratios))
    per_merge = seconds_per_merge({"copies": (copied, genomes), "shared": (shared, genomes)},
                                  ratios, args.rounds)
    print(f"{len(genomes)} genomes x {args.rounds} rounds, the same child to the bit")
    for name, parents in (("copies", copied), ("shared", shared)):
        print(f"{name:7s} {per_merge[name]:.2f} s per merge (best round), parents "
              f"{held_bytes(parents) / 2**20:.0f} MiB")
    print(f"speed-up {per_merge['copies'] / per_merge['shared']:.2f}x")


if __name__ == "__main__":
    main()
