"""Phase 2's real fitness: merge a candidate in memory and score it on the search split.

The parents' tensors are held once (ParentTensors); one model skeleton is reused, its
weights overwritten by each candidate's merged state, so no model is written to disk
and nothing is rebuilt per candidate.
"""

from __future__ import annotations

import copy
import math
import queue
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

import torch

from ..eval import evaluate
from ..eval.results import GOLD_LOGPROB_CLIP, TaskResult, TaskScore, clipped_gold_logprobs
from ..genome import Genome
from ..io.loading import load_model, load_tokenizer
from ..merge.engine import ParentTensors, merge_state
from ..merge.plan import MergeSettings
from ..mergekit.standard import StandardMerger, StandardRecipe
from ..resources import available_memory

# The fitness of a task is the mean over its items of each item's score,
#     item score = primary_i (signed) + TIE_BREAK * clip(gold logprob_i, -GOLD_LOGPROB_CLIP, 0)
# (the gold log-probability per character, eval/results.py). The mean of per-item clipped
# values replaces the mean log-probability: racing pairs the same per-item scores, so a
# stopped candidate's estimate and a full one's fitness are one quantity, and the clip
# bounds what one item (a choice the model finds absurd) can weigh. The continuous part of
# a task differs between two candidates by at most TIE_BREAK * GOLD_LOGPROB_CLIP, below half
# an item of accuracy on up to TIE_FREE_ITEMS items per task, so it orders candidates tied
# on accuracy and never reverses an accuracy difference of one item or more
# (docs/EVOLVE.md, "Fitness"). CMA-ES reads only the ranks of the values.
TIE_FREE_ITEMS = 1000
TIE_BREAK = 4e-5
assert TIE_BREAK * GOLD_LOGPROB_CLIP < 1 / (2 * TIE_FREE_ITEMS)
# Taken off the fitness of a child that breaks a guard: more than any fitness can differ
# (weights sum to 1, primary scores lie in [0, 1]), so a guarded child always ranks first.
GUARD_PENALTY = 1.0
# The paired guard (Recipe.guard_rule "paired"): the child's items on the guard task, paired
# with the reference's on the same search items, break the guard when their mean
# difference is more than GUARD_STDERRS standard errors below minus the tolerance. The
# floor rule's cliff on 50 noisy items decided rankings the test items reversed; one
# standard error calls a child exactly at the floor broken 16% of the time (the floor
# rule: half) and keeps one two standard errors below it 16% of the time (docs/EVOLVE.md).
GUARD_STDERRS = 1.0
GUARD_RULES = ("floor", "paired")


def continuous_part(result: TaskScore) -> float:
    """A task's mean clipped gold log-probability (0 for a generative task, which has
    none). A row stored before the per-item values were kept has their mean only: clipped
    whole."""
    if result.mean_clipped_gold_logprob is not None:
        return float(result.mean_clipped_gold_logprob)
    if result.mean_gold_logprob is None:
        return 0.0
    return clipped_gold_logprobs([float(result.mean_gold_logprob)])[0]


def item_values(primary: list[float], gold_logprobs: list[float] | None) -> list[float]:
    """Each item's score (signed primary scores; see TIE_BREAK): their mean is the task's
    part of the fitness. Without log-probabilities, the primary scores alone."""
    if gold_logprobs is None:
        return list(primary)
    return [score + TIE_BREAK * lp for score, lp in
            zip(primary, clipped_gold_logprobs(gold_logprobs), strict=True)]


def fitness_of(scores: dict[str, TaskScore], weights: dict[str, float]) -> float:
    """The weighted mean over tasks of each task's item scores (`item_values`): primary
    metrics (signed: higher is better) plus the small continuous term (log-likelihood
    tasks only; generative ones have none); -1 for a broken child."""
    total = 0.0
    for task, weight in weights.items():
        result = scores[task]
        score, tie = result.signed_primary, continuous_part(result)
        raw = 0.0 if result.mean_gold_logprob is None else float(result.mean_gold_logprob)
        if not all(math.isfinite(value) for value in (score, tie, raw)):
            return -1.0
        total += weight * (score + TIE_BREAK * tie)
    return total


def guard_verdicts(scores: dict[str, TaskScore], tolerances: dict[str, float],
                   parent_scores: dict[str, dict[str, TaskScore]],
                   reference_items: dict[str, dict[str, list[float]]] | None = None
                   ) -> dict[str, dict]:
    """Per guard task: the child's score, the floor (the reference's score minus the
    tolerance) and whether the child stays on or above it (`--guard lambada_openai=0.05`).

    The reference is the base when the merge has one: the model both fine-tunes started
    from, whose general skills the guard protects (the best of three noisy scores would
    raise the floor by their noise); without a base, the better parent. With the
    reference's signed per-item scores (`reference_items`, the paired rule) and the
    child's, the verdict is `paired_verdict`'s."""
    references = ({"base": parent_scores["base"]} if "base" in parent_scores
                  else parent_scores)
    verdicts = {}
    for task, tolerance in tolerances.items():
        model = max(references, key=lambda name: references[name][task].signed_primary)
        reference = references[model][task].signed_primary
        child = scores[task].signed_primary
        floor = reference - tolerance
        verdicts[task] = {"child": child, "reference": reference, "reference_model": model,
                          "floor": floor, "tolerance": tolerance, "within": child >= floor}
        if reference_items is not None:
            verdicts[task].update(paired_verdict(scores[task], reference_items[model][task],
                                                 tolerance))
    return verdicts


def paired_verdict(child: TaskResult, reference_items: list[float], tolerance: float
                   ) -> dict:
    """The paired guard: the mean of the child's per-item (signed) scores less the
    reference's on the same items, its standard error, and `within` unless the difference
    is more than GUARD_STDERRS standard errors below -tolerance."""
    ours = signed(child.item_scores, child.higher_is_better)
    if len(ours) != len(reference_items) or not ours:
        raise ValueError(f"a paired guard needs the same items: the child has {len(ours)}, "
                         f"the reference {len(reference_items)}")
    differences = torch.tensor(ours, dtype=torch.float64) - torch.tensor(
        reference_items, dtype=torch.float64)
    mean = float(differences.mean())
    stderr = float(differences.std(correction=1) / math.sqrt(len(ours))) if len(ours) > 1 \
        else 0.0
    return {"rule": "paired", "difference": mean, "stderr": stderr,
            "within": mean + GUARD_STDERRS * stderr >= -tolerance}


def signed(item_scores: list[float], higher_is_better: bool) -> list[float]:
    """Per-item primary scores signed so that higher is better."""
    return item_scores if higher_is_better else [-s for s in item_scores]


def guarded(fitness: float, verdicts: dict[str, dict]) -> float:
    """The fitness, less GUARD_PENALTY when any guard is broken."""
    broken = any(not v["within"] for v in verdicts.values())
    return fitness - GUARD_PENALTY if broken else fitness


class CandidateScorer:
    """Scores genomes (and the parents themselves) on the fitness tasks.

    `dtype` is the skeleton's, the forward passes' (the recipe's `forward_dtype`); the
    parents' tensors and each merge keep their own, and are cast as they are written in."""

    def __init__(self, parents: ParentTensors, weights: dict[str, float],
                 mri_ratios: dict[str, float] | None, settings: MergeSettings, *,
                 split: str = "search", limit: int | None = None, batch_size: int = 16,
                 device: str = "cpu", dtype: str = "float32", guard_tasks: tuple = ()):
        self.parents = parents
        self.weights = weights
        # what each candidate is scored on: the fitness tasks, then any guard task
        self.guard_tasks = [t for t in guard_tasks if t not in weights]
        self.tasks = list(weights) + self.guard_tasks
        self.mri_ratios = mri_ratios
        self.settings = settings
        self.split, self.limit, self.batch_size = split, limit, batch_size
        self.model = load_model(parents.father_path, device=device, dtype=dtype)
        self.tokenizer = load_tokenizer(parents.father_path)
        self.device = device
        self.standard: StandardMerger | None = None  # made when a baseline is first merged

    def twin(self) -> CandidateScorer:
        """A scorer of the same parents and settings with its own skeleton and tokenizer
        (a tokenizer is not safe to share between threads): it scores another model at
        the same time (`score_concurrently`)."""
        self.standard_merger()  # one merger (and its memo) for the scorer and its twins
        twin = copy.copy(self)
        twin.model = copy.deepcopy(self.model)
        twin.tokenizer = load_tokenizer(self.parents.father_path)
        return twin

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Write a candidate's (or a parent's) tensors into the reused model skeleton."""
        own = self.model.state_dict()
        with torch.no_grad():
            for name, tensor in state.items():
                own[name].copy_(tensor)

    def score_state(self, state: dict[str, torch.Tensor], tasks: list[str] | None = None,
                    split: str | None = None, limit: int | None = None,
                    log_samples: bool = False) -> dict[str, TaskResult]:
        self.load(state)
        return self.evaluate_loaded_tasks(tasks or self.tasks, split or self.split,
                                          limit or self.limit, log_samples)

    def evaluate_loaded_tasks(self, tasks: list[str], split: str, limit: int | None,
                              log_samples: bool = False) -> dict[str, TaskResult]:
        """The loaded model on the first `limit` items of `split` of each task."""
        return evaluate(self.model, self.tokenizer, tasks, split=split, limit=limit,
                        batch_size=self.batch_size, log_samples=log_samples)

    def evaluate_loaded(self, task: str, limit: int, skip: int = 0) -> TaskResult:
        """The loaded model on the search items [skip, limit) of one task (racing)."""
        return evaluate(self.model, self.tokenizer, [task], split=self.split, limit=limit,
                        skip=skip, batch_size=self.batch_size)[task]

    def evaluate_loaded_all(self, tasks: list[str]) -> dict[str, TaskResult]:
        """The loaded model on all search items (under the limit) of `tasks`."""
        return evaluate(self.model, self.tokenizer, tasks, split=self.split, limit=self.limit,
                        batch_size=self.batch_size)

    def child_state(self, genome: Genome) -> dict[str, torch.Tensor]:
        return merge_state(self.parents, genome, self.mri_ratios, self.settings)

    def state_of(self, candidate: Genome | StandardRecipe) -> dict[str, torch.Tensor]:
        """A candidate's merged state: a genome's child, or a standard recipe's (the
        tuned baselines, evolve/baselines.py), both in memory from the same parents."""
        if isinstance(candidate, Genome):
            return self.child_state(candidate)
        return self.standard_merger().state(candidate)

    def standard_merger(self) -> StandardMerger:
        """The merger of the standard recipes, made when first needed."""
        if self.standard is None:
            self.standard = StandardMerger(self.parents)
        return self.standard

    def merge_fingerprint(self, candidate: StandardRecipe) -> str:
        """A standard recipe's merge fingerprint (`StandardMerger.fingerprint`): equal
        for two recipes that make the same child, to the bit."""
        return self.standard_merger().fingerprint(candidate)

    def score(self, genome: Genome) -> tuple[float, dict, dict]:
        """(fitness, scores per task, timings) of one candidate."""
        started = time.perf_counter()
        state = self.child_state(genome)
        merged = time.perf_counter()
        scores = self.score_state(state)
        done = time.perf_counter()
        timings = {"merge_seconds": merged - started, "eval_seconds": done - merged}
        return fitness_of(scores, self.weights), scores, timings

    def references(self) -> tuple[str, ...]:
        """The models a child is measured against besides the baselines: both parents, and
        the base when the merge has one."""
        return ("father", "mother") + (("base",) if self.parents.base is not None else ())

    def score_parent(self, which: str, tasks: list[str] | None = None, split: str | None = None,
                     limit: int | None = None) -> dict[str, TaskResult]:
        """A reference model (see `references`) on the tasks."""
        return self.score_state(getattr(self.parents, which), tasks, split, limit)


def scores_summary(scores: dict[str, TaskScore]) -> dict[str, dict]:
    """What the study and trials.json keep of a model's scores, as rows: each task's
    primary metric (named in `metric`), its standard error, the tie-breaker and n (not the
    per-item lists); `read_scores` reads them back."""
    return {task: result.summary().row() for task, result in scores.items()}


def read_scores(rows: dict[str, dict], whose: str = "a model") -> dict[str, TaskScore]:
    """Stored score rows (`scores_summary`, the study's user attributes) as TaskScores."""
    return {task: TaskScore.from_row(row, f"{whose}'s scores on {task}")
            for task, row in rows.items()}


def parent_search_scores(study) -> dict[str, dict[str, TaskScore]]:
    """The references' search-split scores the study keeps (phase1.parent_scores)."""
    return {name: read_scores(rows, name)
            for name, rows in study.user_attrs["parent_search_scores"].items()}


# The study's attribute holding each reference's signed per-item scores on the guard tasks
# (search split): what the paired guard pairs a child with.
GUARD_ITEMS_ATTR = "parent_guard_items"


def guard_items_of(scores: dict[str, dict[str, TaskResult]], tasks: list[str]
                   ) -> dict[str, dict[str, list[float]]]:
    """What GUARD_ITEMS_ATTR keeps of the references' scores."""
    return {model: {t: signed(results[t].item_scores, results[t].higher_is_better)
                    for t in tasks} for model, results in scores.items()}


def reference_guard_items(study, guard_rule: str) -> dict[str, dict[str, list[float]]] | None:
    """The references' per-item guard scores under the paired rule (None: the floor)."""
    return study.user_attrs[GUARD_ITEMS_ATTR] if guard_rule == "paired" else None


# Models scored at the same time on a CPU (the finish's holdout table). On this 2-core
# machine two models with one torch thread each score about 1.4x the items of one model on
# two threads: a small model's passes do not keep two threads busy (docs/EVOLVE.md).
CONCURRENT_MODELS = 2
ScoringJob = Callable[[CandidateScorer], dict]  # scores what it loads into the scorer given


def concurrency(scorer: CandidateScorer, models: int) -> int:
    """How many models to score at once: CONCURRENT_MODELS on a CPU with at least that
    many torch threads and free memory for the extra skeletons (four times their bytes,
    for the activations too), else 1."""
    if scorer.device != "cpu" or models < 2 or torch.get_num_threads() < CONCURRENT_MODELS:
        return 1
    skeleton = sum(t.numel() * t.element_size() for t in scorer.model.state_dict().values())
    free = available_memory(torch.device("cpu"))
    if free is None or free < 4 * skeleton * (CONCURRENT_MODELS - 1):
        return 1
    return CONCURRENT_MODELS


def score_concurrently(scorer: CandidateScorer, jobs: dict[Hashable, ScoringJob]
                       ) -> dict[Hashable, dict]:
    """Each job's result (in the jobs' order); a job gets a scorer whose skeleton is its own
    while it runs. With `concurrency` > 1 the jobs run that many at a time, the torch
    threads split between them; a model's scores then depend on its thread count only
    (one per job on 2 cores), not on which jobs run beside it."""
    workers = concurrency(scorer, len(jobs))
    if workers == 1:
        return {name: job(scorer) for name, job in jobs.items()}
    previous = torch.get_num_threads()
    threads = max(1, previous // workers)
    idle: queue.SimpleQueue[CandidateScorer] = queue.SimpleQueue()
    for worker in [scorer] + [scorer.twin() for _ in range(workers - 1)]:
        idle.put(worker)

    def run(job: ScoringJob) -> dict:
        torch.set_num_threads(threads)  # the calling thread's own OpenMP count too
        worker = idle.get()
        try:
            return job(worker)
        finally:
            idle.put(worker)

    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = {name: pool.submit(run, job) for name, job in jobs.items()}
            return {name: future.result() for name, future in futures.items()}
    finally:
        torch.set_num_threads(previous)
