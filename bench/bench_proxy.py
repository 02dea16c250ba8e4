"""The Phase 1 proxy, validated on random genomes: its Spearman with the real fitness.

    .venv/bin/python bench/bench_proxy.py runs/bench-v3b/smollm2-specialists-overlap \
        [--cache .cache] [--genomes 30] [--items 50] [--seed 0] [--out proxy.json]

A benchmark problem's folder (`darwin bench quality`) gives the problem (its name), its scan
and its first seed's study (the parents' search-split scores the proxy reads); the recipe
is the benchmark's quick mode for the problem. `--genomes` genomes are drawn uniformly inside the
bounds of the genes Phase 1 searches (genome rule v2's 14; the v3 genes at their v2 values,
which the proxy does not read); each is merged in memory and scored on `--items` search
items per fitness task *after* the first `scan_items` (the items the scan's attribution
was fitted on), so the proxy is judged on items it never saw. Prints and writes each
genome's proxy and real fitness, the Spearman correlation and its 95% bootstrap interval
over genomes (issue 37: under 0.5, the proxy should not seed the search).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from bench_baselines import recorded_attributes  # this folder's bench
from scipy.stats import spearmanr

from darwin_merge.evolve import proxy
from darwin_merge.evolve.phase1 import build_proxy_data
from darwin_merge.evolve.recipe import Recipe, build_recipe
from darwin_merge.evolve.scoring import CandidateScorer, fitness_of, read_scores
from darwin_merge.genome import GENE_BOUNDS, Genome, genes_of
from darwin_merge.merge.engine import ParentTensors
from darwin_merge.merge.plan import MergeSettings
from darwin_merge.records import ScanRecord, read_record
from darwin_recipes.benchmark.problem import load_problem
from darwin_recipes.benchmark.run import MODES, problem_parents

RESAMPLES = 4000


def random_genomes(count: int, seed: int) -> list[Genome]:
    """Genomes uniform inside Phase 1's gene bounds (rule v2)."""
    rng = random.Random(seed)
    return [Genome(**{g: rng.uniform(*GENE_BOUNDS[g]) for g in genes_of("v2")})
            for _ in range(count)]


def spearman_interval(proxy_values: list[float], real: list[float], seed: int
                      ) -> tuple[float, float]:
    """The 2.5% and 97.5% percentiles of Spearman's rho over genomes resampled with
    replacement (resamples with a constant side are skipped)."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(proxy_values), np.asarray(real)
    rhos = []
    for _ in range(RESAMPLES):
        pick = rng.integers(0, len(x), len(x))
        if np.ptp(x[pick]) > 0 and np.ptp(y[pick]) > 0:
            rhos.append(spearmanr(x[pick], y[pick]).statistic)
    low, high = np.percentile(rhos, [2.5, 97.5])
    return float(low), float(high)


def problem_recipe(folder: Path, cache: Path) -> Recipe:
    """The benchmark's quick-mode recipe of the problem whose folder this is."""
    problem = load_problem(folder.name)
    parents, tasks, _ = problem_parents(problem, cache, "cpu")
    return build_recipe(**parents, fitness={tasks[t]: w for t, w in problem.fitness.items()},
                        out=folder / "proxy-validation", scan=folder / "scan",
                        **{**MODES["quick"], **problem.budget})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a benchmark problem's folder")
    parser.add_argument("--cache", type=Path, default=Path(".cache"))
    parser.add_argument("--genomes", type=int, default=30)
    parser.add_argument("--items", type=int, default=50, help="items per fitness task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON of every genome's pair")
    args = parser.parse_args()
    recipe = problem_recipe(args.folder, args.cache)
    scan = read_record(ScanRecord, args.folder / "scan" / ScanRecord.file_name)
    mri, settings = scan.mri_ratios(), MergeSettings()
    parents = ParentTensors.load(recipe.father, recipe.mother, recipe.base,
                                 device=recipe.device, dtype=recipe.dtype)
    scorer = CandidateScorer(parents, recipe.weights, mri, settings, split="search",
                             batch_size=recipe.batch_size, device=recipe.device,
                             dtype=recipe.forward_dtype)
    stored = recorded_attributes(args.folder / "seed-0")["parent_search_scores"]
    scores = {name: read_scores(rows, name) for name, rows in stored.items()}
    data = build_proxy_data(recipe.weights, parents, scan, mri, settings, scores)
    skip, tasks = recipe.scan_items, list(recipe.weights)
    rows = []
    for index, genome in enumerate(random_genomes(args.genomes, args.seed)):
        started = time.perf_counter()
        scorer.load(scorer.child_state(genome))
        results = {t: scorer.evaluate_loaded(t, skip + args.items, skip=skip) for t in tasks}
        rows.append({"genome": genome.model_dump(), "proxy": proxy.proxy_fitness(genome, data),
                     "fitness": fitness_of(results, recipe.weights),
                     "seconds": time.perf_counter() - started})
        print(f"genome {index + 1}/{args.genomes}: proxy {rows[-1]['proxy']:+.4f}, "
              f"fitness {rows[-1]['fitness']:.4f} ({rows[-1]['seconds']:.0f} s)", flush=True)
    proxy_values, real = [r["proxy"] for r in rows], [r["fitness"] for r in rows]
    rho = float(spearmanr(proxy_values, real).statistic)
    low, high = spearman_interval(proxy_values, real, args.seed)
    kind = "attribution" if data.attribution is not None else "distance"
    print(f"{kind} proxy vs fitness on search items {skip}..{skip + args.items - 1} of "
          f"{', '.join(tasks)}: Spearman {rho:+.3f} [{low:+.3f}, {high:+.3f}] over "
          f"{len(rows)} random genomes")
    if args.out is not None:
        record = {"folder": str(args.folder), "proxy": kind, "items": args.items, "skip": skip,
                  "spearman": rho, "ci95": [low, high], "genomes": rows}
        args.out.write_text(json.dumps(record, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
