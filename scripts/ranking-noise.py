"""How much of the search's ranking of its candidates is item noise, read off a finished run.

    .venv/bin/python scripts/ranking-noise.py RUN_DIR [--study darwin]

Over the Phase 2 candidates scored on every search item (not stopped by racing), each
candidate's fitness is recomputed on the even and on the odd items of each task; the
Spearman correlation of the two halves says how far a second measurement with as many
items would rank them alike (near 0 or below: their differences are noise). Beside it, the
proxy's Spearman with the real fitness over the same candidates and over all of them (the
latter is summary.json's `phase1.spearman`). Reads the run's study (each trial's
`item_scores`) and summary.json; scores nothing, never touches the holdout split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import optuna
from scipy.stats import spearmanr

from darwin_merge.evolve.study import fully_scored, proxy_spearman, scored_trials
from darwin_merge.records import SummaryRecord, read_record


def half_fitness(trial, weights: dict[str, float], parity: int) -> float:
    """The weighted fitness on the items whose index has this parity, in each task."""
    scores = trial.user_attrs["item_scores"]
    return sum(w * float(np.mean(scores[t][parity::2])) for t, w in weights.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--study", default="darwin")
    args = parser.parse_args()
    summary = read_record(SummaryRecord, args.run_dir / "summary.json")
    weights = {t: w / sum(summary.fitness.values()) for t, w in summary.fitness.items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=args.study,
                              storage=f"sqlite:///{(args.run_dir / 'study.db').resolve()}")
    trials = [t for t in scored_trials(study, 2) if t.user_attrs.get("duplicate_of") is None]
    full = fully_scored(trials)
    even = [half_fitness(t, weights, 0) for t in full]
    odd = [half_fitness(t, weights, 1) for t in full]
    proxy = [t.user_attrs["proxy_fitness"] for t in full]
    print(f"{len(trials)} Phase 2 candidates, {len(full)} scored on every search item")
    print(f"even items vs odd items, over those {len(full)}: Spearman "
          f"{spearmanr(even, odd).statistic:.3f}")
    print(f"proxy vs real fitness over those {len(full)}: Spearman "
          f"{spearmanr(proxy, [t.value for t in full]).statistic:.3f}")
    rho, pairs = proxy_spearman(study)  # summary.json's phase1.spearman
    print(f"proxy vs real fitness over all {pairs}: Spearman {rho:.3f}")


if __name__ == "__main__":
    main()
