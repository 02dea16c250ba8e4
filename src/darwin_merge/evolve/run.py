"""The whole search, start to finish (or continued after a kill)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
from filelock import FileLock, Timeout

from ..errors import OutputError
from ..memory_plan import evolve_plan
from ..merge.engine import ParentTensors
from ..merge.plan import MergeSettings
from ..records import ScanRecord, SummaryRecord, file_names, read_record
from ..resources import cpu_has_fast_bfloat16
from . import say
from .baselines import baseline_seeds
from .finish import finish, write_records
from .phase1 import build_proxy_data, parent_scores, run_phase1_cached
from .phase2 import enqueue_seeds, run_phase2
from .recipe import Recipe, check_recipe, ensure_scan
from .scoring import CandidateScorer
from .study import fail_stale_trials, open_study, quiet_optuna


def _single_worker_lock(out: Path) -> FileLock:
    """With the default SQLite study, one process at a time works in a RUN_DIR."""
    lock = FileLock(out / ".evolve.lock", timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise OutputError(f"{out}: another `darwin evolve` is running in this folder "
                          "(use --storage postgresql://... for several workers)") from exc
    return lock


@dataclass
class Search:
    """A search run to the end of Phase 2: what its finish (or a benchmark) works from."""

    recipe: Recipe
    study: optuna.Study
    scorer: CandidateScorer
    settings: MergeSettings
    scan_path: Path
    phase1: dict
    seconds: float  # Phase 2's


@contextmanager
def searched(recipe: Recipe) -> Iterator[Search]:
    """Run (or continue) the search described by `recipe` up to the end of Phase 2, holding
    the run folder's lock until the caller is done with it."""
    check_recipe(recipe)
    evolve_plan(recipe).check()  # before anything is created or read
    out = Path(recipe.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = _single_worker_lock(out) if recipe.storage is None else None
    try:
        with quiet_optuna():
            settings = MergeSettings()
            # done first, so that an unreachable storage or another search's study is refused
            # before the scan and the parents' loading; the seeds are scored with this sampler
            study = open_study(recipe, optuna.samplers.RandomSampler(seed=recipe.seed))
            warn_slow_bfloat16(recipe)
            scan_path = ensure_scan(recipe)
            scan = read_record(ScanRecord, scan_path)  # checked before it is used
            mri = scan.mri_ratios()
            say("reading both parents into memory (held once for every candidate)")
            parents = ParentTensors.load(recipe.father, recipe.mother, recipe.base,
                                         device=recipe.device, dtype=recipe.dtype)
            scorer = CandidateScorer(parents, recipe.weights, mri, settings, split="search",
                                     limit=recipe.limit, batch_size=recipe.batch_size,
                                     device=recipe.device, dtype=recipe.forward_dtype,
                                     guard_tasks=tuple(recipe.guard))
            scores = parent_scores(recipe, scorer, study)  # the real sampler needs Phase 1's best
            data = build_proxy_data(recipe.weights, parents, scan, mri, settings, scores)
            phase1 = run_phase1_cached(recipe, data)
            stale = fail_stale_trials(study) if recipe.storage is None else []
            if stale:
                say(f"{len(stale)} candidate(s) were cut off by an interruption; queued again")
            enqueue_seeds(study, phase1, stale, recipe, baseline_seeds(recipe, scorer, study))
            seconds = run_phase2(recipe, study, scorer, settings, data, phase1)
            write_records(recipe, study, phase1)
            yield Search(recipe, study, scorer, settings, Path(scan_path), phase1, seconds)
    finally:
        if lock is not None:
            lock.release()


def run_evolve(recipe: Recipe, finish_run: bool = True) -> SummaryRecord | None:
    """Run (or continue) the search described by `recipe`; returns the summary it wrote to
    summary.json (None with `finish_run` False: the search alone, recorded in the study)."""
    with searched(recipe) as search:
        if not finish_run:
            return None
        summary = finish(recipe, search.study, search.scorer, search.settings,
                         search.scan_path, search.phase1, search.seconds)
        write_records(recipe, search.study, search.phase1,
                      frozenset(r.trial for r in summary.rejected_by_health),
                      summary.best.trial)
        _write_card(recipe)
        return summary


def _write_card(recipe: Recipe) -> None:
    from ..card.build import write_card, write_report  # a broken card package: no skip

    out = Path(recipe.out)
    write_card(out / file_names.CHILD_DIR, out)
    write_report(out)


def warn_slow_bfloat16(recipe: Recipe) -> None:
    """A line before the work when bfloat16 forward passes will be slow on this CPU."""
    if (recipe.forward_dtype == "bfloat16" and recipe.device == "cpu"
            and cpu_has_fast_bfloat16() is False):
        say("[yellow]warning[/yellow]: forward passes in bfloat16 on a CPU without AMX or "
            "AVX512-BF16 run slower than float32 here; --eval-dtype float32 is faster "
            "(the search's scores differ a little between the two)")
