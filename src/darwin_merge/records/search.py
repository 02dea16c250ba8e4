"""What `darwin evolve` writes in RUN_DIR: summary.json, trials.json and phase1.json.

Every summary key may be absent or null (an interrupted or partial run, an older file):
the card leaves out what is missing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ConfigDict, RootModel

from . import file_names
from .base import SCHEMA_VERSION, GenomeValues, Number, Part, Record
from .health import HealthVerdict

# One task's scores as a flat row (eval/results.py: TaskScore.row(); read with from_row)
TaskScores = dict[str, Any]


class Best(Part):
    genome: GenomeValues | None = None
    genome_hash: str | None = None
    trial: int | None = None
    search_fitness: Number | None = None
    # who proposed it: tuned_baseline (and which), proxy_top_k, anchor (and which), cma_es
    # or requeued_after_kill
    source: str | None = None
    anchor: str | None = None
    omitted_when_none = ("source", "anchor", "genome")

    def proposer(self) -> str | None:
        """Who proposed this genome, in words (None in a record written before sources)."""
        if self.source is None:
            return None
        words = PROPOSERS.get(self.source, self.source)
        return f"{words} {self.anchor}" if self.anchor else words


# Phase 2's sources of candidates (trials.json's `source`), in words: one candidate and a
# count of them ("4 proxy top-k seeds").
PROPOSERS = {"cma_es": "CMA-ES", "proxy_top_k": "Phase 1's proxy (top-k)",
             "tuned_baseline": "the tuned baseline",
             "anchor": "the anchor", "requeued_after_kill": "a candidate requeued after a kill"}
SOURCE_COUNTS = {"tuned_baseline": "tuned baseline seeds",
                 "proxy_top_k": "proxy top-k seeds", "anchor": "anchors",
                 "cma_es": "CMA-ES candidates", "requeued_after_kill": "requeued after a kill"}


class Stake(Part):
    """What a fitness task stands to gain from its better parent (Phase 1)."""

    task: str
    weight: Number
    donor: str
    gap: Number


class Phase1Summary(Part):
    steps: int | None = None
    seconds: Number | None = None
    proxy_model: str | None = None
    top_k: int | None = None
    # the proxy's rank correlation with the real fitness over every Phase 2 candidate
    # (racing's estimates included: `pairs` of them), and over the fully scored ones only
    spearman: Number | None = None
    pairs: int | None = None
    spearman_full: Number | None = None
    pairs_full: int | None = None
    stakes: list[Stake] | None = None
    omitted_when_none = ("spearman_full", "pairs_full")


class Phase2Summary(Part):
    trials: int | None = None
    seconds: Number | None = None
    # how the search went: candidates per source, CMA-ES generations (its candidates over
    # the population size), how many racing stopped (of them, how many within one standard
    # error of the incumbent's fitness: close calls; None in records from before it was
    # counted), the best fully scored seed (a proxy top-k genome or an anchor) and what
    # CMA-ES added over it on the search split
    sources: dict[str, int] | None = None
    cma_es_generations: int | None = None
    cma_es_step: Number | None = None  # sigma0 (evolve/phase2.py, cma_es_sigma)
    stopped_by_racing: int | None = None
    stopped_within_one_se: int | None = None
    best_seed: Best | None = None
    cma_es_gain: Number | None = None
    # the Pareto front of the health-checked candidates (trial numbers, fittest first) and
    # how the child was chosen among the candidates (--prefer; evolve/front.py)
    front: list[int] | None = None
    prefer: str | None = None
    omitted_when_none = ("sources", "cma_es_generations", "cma_es_step", "stopped_by_racing",
                         "front", "prefer",
                         "stopped_within_one_se", "best_seed", "cma_es_gain")


class HoldoutTask(Part):
    n: int | None = None
    metric: str | None = None
    higher_is_better: bool | None = None
    shots: int | None = None
    role: str | None = None


class Holdout(Part):
    """Every model on the holdout items, and the child's paired comparison with each."""

    tasks: dict[str, HoldoutTask] = {}
    # model -> task -> scores, and the model's "fitness" on these items
    models: dict[str, dict[str, TaskScores | Number | None]] = {}
    comparisons: dict[str, dict[str, dict[str, Any]]] = {}


class GuardVerdict(Part):
    """A guard task's verdict on the child (evolve/scoring.guard_verdicts)."""

    child: Number
    reference: Number
    reference_model: str  # the base, or the better parent without a base
    floor: Number
    tolerance: Number
    within: bool


class BaselinePoint(Part):
    """One point of a tuned standard recipe, scored on the search split (evolve/baselines.py)."""

    name: str
    family: str  # task_arithmetic, ties or dare_ties
    method: str
    scale: Number
    density: Number
    search_fitness: Number  # guarded; a racing estimate when not fully scored
    fully_scored: bool
    items_scored: int
    guards_kept: bool | None = None  # None: no guard, stopped by racing, or guards not scored
    guards_scored: bool | None = None  # None: no guard; False: below its recipe's best points
    health: str | None = None  # checked for each recipe's best points only
    same_merge_as: str | None = None  # a point making this merge, to the bit, scored first


# The standard recipes' methods in words (mergekit/standard.py), for every report.
METHOD_WORDS = {"task_arithmetic": "task arithmetic", "ties": "TIES", "dare_ties": "DARE-TIES"}


class StandardValues(Part):
    """A standard recipe (mergekit/standard.py): method, lambda and density."""

    method: str
    scale: Number
    density: Number

    def words(self) -> str:
        """'TIES, density 0.5, lambda 1.25' (task arithmetic has no density)."""
        density = "" if self.method == "task_arithmetic" else f", density {self.density:g}"
        return f"{METHOD_WORDS.get(self.method, self.method)}{density}, lambda {self.scale:g}"


class BaselineSearch(Part):
    """How the baselines were chosen: `mode` none, fixed or tuned; for tuned, every point
    scored, each recipe's best point (`chosen`) and best healthy one (`healthy`), and the
    best of those overall (`best_tuned`, `best_healthy_tuned`)."""

    mode: str
    seconds: Number | None = None
    points: list[BaselinePoint] = []
    chosen: dict[str, str] = {}
    healthy: dict[str, str | None] = {}
    best_tuned: str | None = None
    best_healthy_tuned: str | None = None
    # every baseline of the holdout table: its health verdict, and the standard recipes' values
    health: dict[str, str | None] = {}
    recipes: dict[str, StandardValues] = {}


class HealthRejected(Part):
    """A candidate that scored above the child on the search split, left out because its
    child failed the health check: its verdict, reasons and the probe losses behind them."""

    trial: int
    search_fitness: Number
    verdict: str
    reasons: list[str] = []
    probe_losses: dict[str, dict[str, Number | None]] | None = None
    probe_excess: Number | None = None  # evolve/gate.py, probe_excess
    omitted_when_none = ("probe_losses", "probe_excess")


class SummaryRecord(Record):
    """summary.json (evolve/finish.py writes every field); empty for a card made from a
    child without its run (`darwin card CHILD`), hence the defaults."""

    file_name = file_names.SUMMARY

    # Every key is written by the finish (evolve/finish.py) of every run, so every key is
    # required; None is a value where it means something (no base, every item, no scan).
    darwin_version: str
    created: str
    command: str
    father: str
    mother: str
    base: str | None  # merged without a base
    device: str
    dtype: str
    eval_dtype: str | None  # the forward passes' dtype (scoring, health)
    fitness: dict[str, Number]
    limit: int | None  # every search item
    best: Best
    baselines: dict[str, GenomeValues]
    baseline_search: BaselineSearch
    phase1: Phase1Summary
    phase2: Phase2Summary
    holdout: Holdout
    # the fitness on the search split of the child, the references and the baselines (the
    # child was chosen there, so its lead is biased upward)
    search_split: dict[str, Number]
    holdout_limit: int | None
    fitness_holdout_limit: int | None
    guard: dict[str, GuardVerdict]
    health: HealthVerdict
    # candidates better on the search split than the child whose child the health check
    # rejected (the gate's effect on the result, disclosed)
    rejected_by_health: list[HealthRejected]
    scan: str | None  # searched without a scan
    child: str
    versions: dict[str, str | None]
    schema_version: int = SCHEMA_VERSION


class TrialRow(Part):
    """One scored trial of the study (evolve/study.trial_table)."""

    number: int
    phase: int | None
    source: str | None
    anchor: str | None
    fitness: Number | None
    proxy_fitness: Number | None
    genome_hash: str | None
    duplicate_of: int | None
    scores: dict[str, TaskScores] | None
    seconds: dict[str, Number] | None  # merge and eval seconds
    race: dict[str, Any] | None
    guard: dict[str, Any] | None
    genome: dict[str, Number]
    finished: str | None
    # the in-memory health check of a fully scored Phase 2 candidate (evolve/front.py)
    health: str | None = None
    probe_excess: Number | None = None

    omitted_when_none: ClassVar[tuple[str, ...]] = ("health", "probe_excess")


class Trials(RootModel[list[TrialRow]]):
    """trials.json: one row per scored trial."""

    model_config = ConfigDict(frozen=True)
    file_name: ClassVar[str] = file_names.TRIALS


class TopGenome(Part):
    """One of Phase 1's top-k genomes, sent to Phase 2."""

    genome: GenomeValues
    proxy_fitness: Number
    hash: str


class Phase1Record(Record):
    """phase1.json: Phase 1's result, with the identity of the search it was made for."""

    file_name = file_names.PHASE1

    identity: dict[str, Any]
    proxy_model: str
    steps: int
    seed: int
    evaluated: int
    seconds: Number
    best_curve: list[Number]
    stakes: list[Stake]
    top_k: list[TopGenome]
    schema_version: int = SCHEMA_VERSION
