"""Phase 2's real fitness: merge a candidate in memory and score it on the search split.

The parents' tensors are held once (ParentTensors); one model skeleton is reused, its
weights overwritten by each candidate's merged state, so no model is written to disk
and nothing is rebuilt per candidate.
"""

from __future__ import annotations

import math
import time

import torch

from ..eval import evaluate
from ..genome import Genome
from ..io.loading import load_model, load_tokenizer
from ..merge.engine import ParentTensors, merge_state
from ..merge.plan import MergeSettings

# Weight of the continuous tie-breaker (mean log-probability of the gold answers, per
# character; typically -0.1..-5) against accuracy. 1e-3 keeps it below one item of
# accuracy on up to ~100 items per task while still ranking equal-accuracy candidates.
TIE_BREAK = 1e-3


def fitness_of(scores: dict[str, dict], weights: dict[str, float]) -> float:
    """Weighted accuracy plus the small continuous tie-breaker; -1 for a broken child."""
    total = 0.0
    for task, weight in weights.items():
        result = scores[task]
        acc = float(result.get("acc", 0.0))
        tie = float(result.get("mean_gold_logprob", 0.0))
        if not math.isfinite(acc) or not math.isfinite(tie):
            return -1.0
        total += weight * (acc + TIE_BREAK * tie)
    return total


class CandidateScorer:
    """Scores genomes (and the parents themselves) on the fitness tasks."""

    def __init__(self, parents: ParentTensors, weights: dict[str, float],
                 mri_ratios: dict[str, float] | None, settings: MergeSettings, *,
                 split: str = "search", limit: int | None = None, batch_size: int = 16,
                 device: str = "cpu", dtype: str = "float32"):
        self.parents = parents
        self.weights = weights
        self.mri_ratios = mri_ratios
        self.settings = settings
        self.split, self.limit, self.batch_size = split, limit, batch_size
        self.model = load_model(parents.father_path, device=device, dtype=dtype)
        self.tokenizer = load_tokenizer(parents.father_path)
        self.device = device

    def _load(self, state: dict[str, torch.Tensor]) -> None:
        own = self.model.state_dict()
        with torch.no_grad():
            for name, tensor in state.items():
                own[name].copy_(tensor)

    def score_state(self, state: dict[str, torch.Tensor], tasks: list[str] | None = None,
                    split: str | None = None, limit: int | None = None) -> dict[str, dict]:
        self._load(state)
        return evaluate(self.model, self.tokenizer, tasks or list(self.weights),
                        split=split or self.split, limit=limit or self.limit,
                        batch_size=self.batch_size)

    def child_state(self, genome: Genome) -> dict[str, torch.Tensor]:
        return merge_state(self.parents, genome, self.mri_ratios, self.settings)

    def score(self, genome: Genome) -> tuple[float, dict, dict]:
        """(fitness, scores per task, timings) of one candidate."""
        started = time.perf_counter()
        state = self.child_state(genome)
        merged = time.perf_counter()
        scores = self.score_state(state)
        done = time.perf_counter()
        timings = {"merge_seconds": merged - started, "eval_seconds": done - merged}
        return fitness_of(scores, self.weights), scores, timings

    def score_parent(self, which: str, tasks: list[str] | None = None, split: str | None = None,
                     limit: int | None = None) -> dict[str, dict]:
        state = self.parents.father if which == "father" else self.parents.mother
        return self.score_state(state, tasks, split, limit)
