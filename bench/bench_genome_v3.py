"""What genome rule v3 costs a Phase 2 candidate's merge (`merge_state`, in memory) on a
finished run's parents, against the same genomes under v2, in turn on the same tensors:

* v2: the run's best genome (if v2) and the default genome, the fused pair kernel;
* v3 as v2: the same genomes read under v3 (`Genome.as_v3`: the reference form, the same
  arithmetic), what the proxy's seeds and the anchors cost under v3;
* v3 TIES: TIES d0.5 lambda 1 as a v3 genome (a magnitude trim of every task vector,
  `kthvalue` over whole tensors), the costliest v3 point, and a TIES-like CMA-ES candidate
  (trim 0.6, DARE 0.9, unequal scales).

Prints seconds per merge (best of `--rounds`) and each one's ratio to v2.

    .venv/bin/python bench/bench_genome_v3.py runs/demo-smollm2 [--rounds 3]
"""

from __future__ import annotations

from bench_genome_merge import run_arguments, run_parents, seconds_per_merge  # this folder's

from darwin_merge.genome import Genome
from darwin_merge.mergekit.standard import StandardRecipe


def genome_sets() -> dict[str, list[Genome]]:
    v2 = [Genome(), Genome.uniform(0.6, density=0.9, merge_method_weight=0.5)]
    ties = StandardRecipe(method="ties", scale=1.0, density=0.5).genome()
    candidate = ties.model_copy(update={"trim_density": 0.6, "density_a": 0.9,
                                        "density_b": 0.9, "scale_a": 0.4, "scale_b": 0.9})
    return {"v2": v2, "v3 as v2": [g.as_v3() for g in v2], "v3 TIES": [ties, candidate]}


def main() -> None:
    args = run_arguments(__doc__)
    parents, ratios = run_parents(args.run)
    best = seconds_per_merge({name: (parents, genomes) for name, genomes in genome_sets().items()},
                             ratios, args.rounds)
    print(f"{args.rounds} rounds, 2 genomes each, seconds per in-memory merge (best round)")
    for name, value in best.items():
        print(f"{name:10s} {value:7.2f} s   {value / best['v2']:.2f}x v2")


if __name__ == "__main__":
    main()
