"""How well Phase 1's proxies rank real children: score a fixed spread of genomes on the
search split, then the Spearman correlation of each proxy with the real fitness.

    .venv/bin/python scripts/proxy-check.py --scan runs/demo-smollm2/scan/scan.json \
        [--father DIR] [--mother DIR] [--scores scores.jsonl] [--limit 100]

The genomes: the ten anchors, 14 uniformly random genomes, and 14 drawn around the scan's
own child (genome 0.5, mri_trust 0.3-1), as CMA-ES draws them; seeded, so every run
scores the same ones. Scores are appended to --scores as they come (a re-run skips the
genomes already there), so the script resumes after a kill. Both proxies are built from
the same scan and the parents' scores, as `darwin evolve` builds them. Never touches the
holdout split. About 20 s per genome on SmolLM2 (2 cores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from darwin_merge.evolve import proxy
from darwin_merge.evolve.phase1 import build_proxy_data
from darwin_merge.evolve.phase2 import anchor_genomes
from darwin_merge.evolve.scoring import CandidateScorer, primary_score, scores_summary
from darwin_merge.genome import GENES, Genome
from darwin_merge.merge.engine import ParentTensors
from darwin_merge.merge.plan import MergeSettings, plan_merge
from darwin_merge.records import ScanRecord, read_record

DEMO_FITNESS = {"two_digit_arithmetic": 0.5, "arc_easy": 0.5}


def genomes(count: int = 14, seed: int = 7) -> list[tuple[str, Genome]]:
    rng = np.random.default_rng(seed)
    chosen = list(anchor_genomes().items())
    chosen += [(f"random{i}", Genome.from_values(rng.uniform(0, 1, len(GENES))))
               for i in range(count)]
    centre = np.array(Genome.uniform(0.5, density=0.9, merge_method_weight=0.5).values())
    for i in range(count):
        values = np.clip(centre + rng.normal(0, 0.2, len(GENES)), 0, 1)
        values[GENES.index("mri_trust")] = rng.uniform(0.3, 1.0)
        chosen.append((f"near{i}", Genome.from_values(values)))
    return chosen


def score_all(scorer: CandidateScorer, path: Path) -> dict[str, dict]:
    """Every parent and genome scored once (read back from `path` where already there)."""
    done = {}
    if path.is_file():
        done = {r["name"]: r for r in map(json.loads, path.read_text().splitlines())}
    with path.open("a", encoding="utf-8") as out:
        for name, genome in [("father", None), ("mother", None), *genomes()]:
            if name in done:
                continue
            if genome is None:
                scores = scores_summary(scorer.score_parent(name))
            else:
                scores = scores_summary(scorer.score(genome)[1])
            done[name] = {"name": name, "genome": None if genome is None else
                          genome.model_dump(), "scores": scores}
            out.write(json.dumps(done[name]) + "\n")
            out.flush()
            print(name, {t: round(primary_score(s), 3) for t, s in scores.items()}, flush=True)
    return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scan", type=Path, required=True)
    parser.add_argument("--father", default=".cache/models/smollm2-135m-instruct")
    parser.add_argument("--mother", default=".cache/models/smollm2-135m-instruct-arith-3282c7a4")
    parser.add_argument("--scores", type=Path, default=Path("proxy-check-scores.jsonl"))
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--trials", type=Path, default=None,
                        help="a run's trials.json: also rank its Phase 2 candidates")
    args = parser.parse_args()
    scan = read_record(ScanRecord, args.scan)
    settings, mri = MergeSettings(), scan.mri_ratios()
    parents = ParentTensors.load(args.father, args.mother, None)
    scorer = CandidateScorer(parents, DEMO_FITNESS, mri, settings, split="search",
                             limit=args.limit)
    records = score_all(scorer, args.scores)
    data = build_proxy_data(DEMO_FITNESS, parents, scan, mri, settings,
                            {p: records[p]["scores"] for p in ("father", "mother")})
    rows = {}
    for name, genome in genomes():
        plan = plan_merge(parents.infos, parents.shapes(), genome, settings, mri)
        real = sum(w * primary_score(records[name]["scores"][t]) for t, w in DEMO_FITNESS.items())
        rows[name] = (proxy.proxy_fitness(genome, data),
                      proxy.distance_fitness(plan, genome, data), real)
    print(f"proxy model: {data.model}")
    for label, prefix in (("all", ""), ("random", "random"), ("near the scan's child", "near")):
        chosen = [v for k, v in rows.items() if k.startswith(prefix)]
        attribution, distance, real = zip(*chosen, strict=True)
        print(f"{label} (n={len(chosen)}): Spearman attribution proxy "
              f"{spearmanr(attribution, real).statistic:.3f}, distance proxy "
              f"{spearmanr(distance, real).statistic:.3f}")
    if args.trials is not None:
        rank_run(json.loads(args.trials.read_text()), data)


def rank_run(trials: list[dict], data) -> None:
    """Today's proxy against a run's Phase 2 candidates (their recorded fitness; a
    candidate stopped by racing carries its estimate)."""
    phase2 = [t for t in trials if t["phase"] == 2 and t["duplicate_of"] is None]
    subsets = {"all": phase2, "CMA-ES": [t for t in phase2 if t["source"] == "cma_es"],
               "CMA-ES scored in full": [t for t in phase2 if t["source"] == "cma_es" and
                                         (t["race"] or {}).get("outcome") != "stopped"]}
    for label, chosen in subsets.items():
        predicted = [proxy.proxy_fitness(Genome(**t["genome"]), data) for t in chosen]
        rho = spearmanr(predicted, [t["fitness"] for t in chosen]).statistic
        print(f"the run's {label} candidates (n={len(chosen)}): Spearman {rho:.3f}")


if __name__ == "__main__":
    main()
