"""A realistic run folder (what `darwin evolve` leaves behind), built from real pieces.

Until the search writes its own, the card and report tests use this: two tiny Llama
parents (with README licences), a child merged by the real engine, real matplotlib
pictures, and summary.json / trials.json / health.json in the search's schema.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tiny_models import make_tiny, perturbed_copy  # noqa: E402

GENOME = {
    "global_ratio": 0.4989, "attn_ratio": 0.1766, "ffn_ratio": 0.9021, "embed_ratio": 0.6122,
    "density_a": 0.9951, "density_b": 0.9617, "block_0_ratio": 0.574, "block_1_ratio": 0.5811,
    "block_2_ratio": 0.5736, "block_3_ratio": 0.4697, "block_4_ratio": 0.493,
    "block_5_ratio": 0.8418, "mri_trust": 0.4907, "merge_method_weight": 0.3623,
}
TASKS = {"arc_easy": {"n": 40, "metric": "acc", "shots": 0, "role": "fitness"},
         "simple_arithmetic": {"n": 30, "metric": "exact_match", "shots": 0, "role": "fitness"},
         "arc_challenge": {"n": 40, "metric": "acc_norm", "shots": 0, "role": "extra"}}
LICENSE_README = "---\nlicense: apache-2.0\nlanguage: [en]\n---\n# a tiny parent\n"


def make_parents(root: Path) -> tuple[Path, Path]:
    """Father and mother: a tiny Llama and a seeded perturbation of it, both Apache-2.0."""
    father = make_tiny("llama", root / "father", seed=0)
    mother = perturbed_copy(father, root / "mother", scale=0.05, seed=3)
    for parent in (father, mother):
        (parent / "README.md").write_text(LICENSE_README)
    return father, mother


def make_child(father: Path, mother: Path, out: Path) -> Path:
    """The child, merged by the engine with GENOME (no scan)."""
    from darwin_merge.genome import Genome
    from darwin_merge.merge.engine import merge_models

    return merge_models(father, mother, out, genome=Genome(**GENOME), progress=False)


def holdout_scores(seed: int = 0) -> dict:
    """Scores for the child, both parents and two baselines, with binomial stderrs."""
    rng = random.Random(seed)
    models = {}
    for model in ("child", "father", "mother", "dare_ties_0.5", "linear_0.5"):
        row: dict = {}
        for task, spec in TASKS.items():
            n, metric = spec["n"], spec["metric"]
            value = rng.randint(5, n - 5) / n
            row[task] = {metric: value, f"{metric}_stderr": (value * (1 - value) / (n - 1))
                         ** 0.5}
        row["fitness"] = (row["arc_easy"]["acc"] + row["simple_arithmetic"]["exact_match"]) / 2
        models[model] = row
    return {"tasks": TASKS, "models": models}


def make_trials(n: int = 12, seed: int = 0) -> list[dict]:
    """Phase 1 top-k seeds then CMA-ES candidates, each with a genome and scores."""
    rng = random.Random(seed)
    trials = []
    for number in range(n):
        genome = {k: round(rng.random(), 4) for k in GENOME}
        if number == 7:
            genome = dict(GENOME)
        arc, arith = rng.random(), rng.random()
        trials.append({"number": number, "phase": 2,
                       "source": "proxy_top_k" if number < 4 else "cmaes",
                       "fitness": (arc + arith) / 2 + (0.5 if number == 7 else 0.0),
                       "proxy_fitness": rng.random(), "genome_hash": f"{rng.getrandbits(64):016x}",
                       "scores": {"arc_easy": {"acc": arc, "acc_stderr": 0.05, "n": 20},
                                  "simple_arithmetic": {"exact_match": arith, "n": 20}},
                       "seconds": {"merge_seconds": 0.25, "eval_seconds": number + 1.5},
                       "genome": genome,
                       "finished": True})
    return trials


def _heatmaps(path: Path, titles: list[str], seed: int) -> None:
    rng = random.Random(seed)
    fig, axes = plt.subplots(1, len(titles), figsize=(4 * len(titles), 3))
    for ax, title in zip(list(axes) if len(titles) > 1 else [axes], titles, strict=True):
        ax.imshow([[rng.random() for _ in range(4)] for _ in range(5)], cmap="magma")
        ax.set(title=title, xlabel="layer", ylabel="probe")
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def make_pictures(run: Path, trials: list[dict]) -> None:
    """scan/, health/ and evolution.png pictures, drawn for real."""
    (run / "scan").mkdir(exist_ok=True)
    (run / "health").mkdir(exist_ok=True)
    _heatmaps(run / "scan" / "mds_father_mother.png", ["father", "mother"], 1)
    _heatmaps(run / "scan" / "mri_ratio.png", ["mri_ratio"], 2)
    _heatmaps(run / "health" / "health.png", ["child vs parents"], 3)
    try:
        from darwin_merge.evolve.plot import plot_evolution

        plot_evolution(trials, [0.1, 0.2, 0.25, 0.3], run / "evolution.png")
    except ImportError:
        _heatmaps(run / "evolution.png", ["evolution"], 4)


def make_run(root: Path) -> dict:
    """A full run folder under root/run; returns {run, child, father, mother, summary, merge}."""
    from darwin_merge.genome import Genome

    root = Path(root)
    father, mother = make_parents(root)
    run = root / "run"
    run.mkdir(parents=True)
    child = make_child(father, mother, run / "child")
    report = json.loads((child / "darwin_merge.json").read_text())
    trials = make_trials()
    make_pictures(run, trials)
    health = {"verdict": "healthy", "reasons": ["no layer lost function against both parents"],
              "flagged_layers": []}
    (run / "health" / "health.json").write_text(json.dumps(health))
    (run / "trials.json").write_text(json.dumps(trials))
    (run / "scan" / "scan.json").write_text(json.dumps({"tensors": {}}))
    summary = {
        "darwin_version": "0.1.0", "created": "2026-11-29T03:00:00+00:00",
        "command": f"darwin evolve {father} {mother} --out {run} --trials 12",
        "father": str(father), "mother": str(mother), "base": None, "device": "cpu",
        "dtype": "float32", "fitness": {"arc_easy": 0.5, "simple_arithmetic": 0.5},
        "best": {"genome": report["genome"], "genome_hash": report["genome_hash"], "trial": 7,
                 "search_fitness": trials[7]["fitness"]},
        "phase1": {"steps": 200, "seconds": 3.1, "top_k": 4, "spearman": 0.42, "pairs": 8},
        "phase2": {"trials": len(trials), "seconds": 61.5},
        "baselines": {"dare_ties_0.5": Genome.uniform(0.5, density=0.9).model_dump(),
                      "linear_0.5": Genome.uniform(0.5, merge_method_weight=0.0).model_dump()},
        "holdout": holdout_scores(), "health": health, "scan": "scan/scan.json",
        "child": "child",
        "versions": {"python": "3.11.2", "torch": "2.13.0", "transformers": "5.24.0",
                     "optuna": "4.5.0"},
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=1))
    return {"run": run, "child": child, "father": father, "mother": mother, "summary": summary,
            "merge": report}
