"""The search's record: an Optuna study in SQLite (default) or PostgreSQL (many workers).

Every scored candidate is a COMPLETE trial with its genome_hash, scores and phase; a
killed run is continued by running the same command again. A study remembers the
search it belongs to (parents, fitness) and refuses to be continued by another one.
Also here: the trial tables read from it (scored, fully scored, the proxy's rank
correlation) and the identity of the worker that scored each trial.

What a resumed run must agree on with the files it finds in RUN_DIR: three things are
kept for a re-run, the study, the scan in RUN_DIR/scan and phase1.json. The scan carries
its own inputs hash (scan.json's `inputs_sha256`, docs/SCAN.md); the other two carry the
identity of what made them (`search_identity` here, `phase1_identity` in phase1.py): the
parents' fingerprints (config, headers and data samples, docs/RELIABILITY.md), the
recipe's fields that its content depends on, and the settings that change scores (dtype,
device, batch size, the items scored, the probe settings). A scan or Phase 1 made for
something else is recomputed; a study made for something else is refused
(`StorageError`): its scores cannot be mixed with new ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from scipy.stats import spearmanr

from ..errors import StorageError
from ..genome import Genome
from ..io.dtypes import eval_dtype_entry
from ..io.fingerprint import parents_fingerprint
from ..records import Best, Phase2Summary
from ..scan.probes import load_probes, probes_sha256
from .gate import SEED_FINDINGS
from .recipe import Recipe

DIRECTION = "maximize"
SCHEMA_RETRIES = 3


def storage_url(recipe: Recipe) -> str:
    if recipe.storage:
        return recipe.storage
    return f"sqlite:///{(Path(recipe.out) / 'study.db').resolve()}"


def study_name(recipe: Recipe) -> str:
    return recipe.study or "darwin"


def open_storage(url: str, distributed: bool) -> RDBStorage:
    """An RDB storage; with several workers, heartbeats let a dead worker's trial be retried."""
    kwargs = {}
    if distributed:
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(3)
        kwargs = dict(heartbeat_interval=10, grace_period=40, heartbeat_stale_trial_callback=retry)
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    for attempt in range(SCHEMA_RETRIES + 1):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except Exception as exc:  # noqa: BLE001 - sqlalchemy and drivers raise many kinds
            if attempt < SCHEMA_RETRIES and _lost_schema_race(exc):
                time.sleep(1 + attempt)  # the other worker is creating the tables: use them
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StorageError(f"cannot open study storage {_redact(url)}: {first}") from exc
    raise AssertionError("unreachable")


# What the loser of the race below is told: PostgreSQL, then SQLite.
SCHEMA_RACE_ERRORS = ("duplicate key", "already exists", "UNIQUE constraint failed")


def _lost_schema_race(exc: Exception) -> bool:
    """Two workers (or a worker and a reader) opening a fresh database at once both create
    Optuna's tables; the loser gets a duplicate-key or already-exists error and should just
    retry."""
    return any(error in str(exc) for error in SCHEMA_RACE_ERRORS)


def _redact(url: str) -> str:
    """Hide a password in a storage URL before printing it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def search_identity(recipe: Recipe) -> dict:
    """What every score in the study depends on (a study must match it to continue)."""
    scan = ({"scan_sha256": _file_sha256(recipe.scan)} if recipe.scan is not None
            else {"probe_max_tokens": recipe.probe_max_tokens,
                  "probe_max_prompts": recipe.probe_max_prompts, "mri": recipe.mri,
                  "scan_items": recipe.scan_items,
                  # absent when True, so that studies made before the option continue
                  **({} if recipe.scan_probe_sets else {"scan_probe_sets": False})})
    # the health gate's probe sets (the scan's are in its own hash); absent for the built-in
    probes = ({"probes_sha256": probes_sha256(load_probes(recipe.probes))}
              if recipe.probes is not None else {})
    return {**recipe.identity(), **scan, **probes,
            "parents_sha256": parents_fingerprint(recipe.father, recipe.mother, recipe.base),
            "device": recipe.device, "dtype": recipe.dtype, "batch_size": recipe.batch_size,
            **eval_dtype_entry(recipe.eval_dtype, recipe.dtype)}


def differences(recorded: dict | None, current: dict) -> list[str]:
    """Names of the fields that differ (every field when nothing was recorded).

    Both sides go through JSON first, so a tuple and the list it was stored as agree."""
    if not isinstance(recorded, dict):
        return sorted(current)
    recorded = json.loads(json.dumps(recorded, default=str))
    current = json.loads(json.dumps(current, default=str))
    return sorted(k for k in current.keys() | recorded.keys()
                  if current.get(k) != recorded.get(k))


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """optuna's per-trial INFO lines off while the search runs (darwin reports its own
    progress), the caller's verbosity restored after."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def open_study(recipe: Recipe, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Create or continue the study; refuse one that belongs to another search."""
    storage = open_storage(storage_url(recipe), distributed=recipe.storage is not None)
    name = study_name(recipe)
    try:
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                    direction=DIRECTION, load_if_exists=True)
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"cannot open study {name!r}: {exc}") from exc
    identity = search_identity(recipe)
    recorded = study.user_attrs.get("identity")
    if recorded is None:
        study.set_user_attr("identity", identity)
    elif diff := differences(recorded, identity):
        raise StorageError(
            f"study {name!r} belongs to another search (different {', '.join(diff)}): its "
            "scores cannot be mixed with this one's; use another --study name or --out folder"
        )
    return study


def scored_trials(study: optuna.Study, phase: int | None = None) -> list:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in trials if phase is None or t.user_attrs.get("phase") == phase]


def fail_stale_trials(study: optuna.Study) -> list[dict]:
    """Single-worker storage: a RUNNING trial found at start-up was cut off by a kill.

    It is marked FAIL (it was never scored) and its parameters are returned so that
    they can be queued again.
    """
    stale = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        stale.append(dict(trial.params))
    return stale


def fully_scored(trials: list) -> list:
    """The trials scored on every search item (not stopped early by racing)."""
    return [t for t in trials if not was_stopped(t)]


def was_stopped(trial) -> bool:
    return "race" in trial.user_attrs and trial.user_attrs["race"]["outcome"] == "stopped"


def stopped_within_one_se(trials: list) -> int | None:
    """How many of `trials` racing stopped within one standard error of the incumbent: the
    shortfall at the stopping look (|diff|) under the SE of the incumbent's fitness over
    its search items (`incumbent_stderr`), so a close call. None when no race record
    carries that SE (racing off, or records from before it was kept)."""
    races = [t.user_attrs["race"] for t in trials if t.user_attrs.get("race") is not None]
    if not any("incumbent_stderr" in r for r in races):
        return None
    return sum(1 for r in races if r["outcome"] == "stopped"
               and r.get("incumbent_stderr") is not None
               and abs(r["decisions"][-1]["diff"]) < r["incumbent_stderr"])


def proxy_spearman(study: optuna.Study, fully_scored_only: bool = False
                   ) -> tuple[float | None, int]:
    """The Phase 1 proxy's Spearman rank correlation with the real fitness over Phase 2's
    candidates (duplicates once), and how many pairs it is over: every candidate (a
    stopped one's value is racing's estimate), or the fully scored ones only."""
    trials = scored_trials(study, 2)
    if fully_scored_only:
        trials = fully_scored(trials)
    pairs = [(t.user_attrs.get("proxy_fitness"), t.value) for t in trials
             if t.user_attrs.get("proxy_fitness") is not None and
             t.user_attrs.get("duplicate_of") is None]
    if len(pairs) < 3 or any(len(set(side)) < 2 for side in zip(*pairs, strict=True)):
        return None, len(pairs)  # too few, or one side constant: no rank correlation
    rho = spearmanr([p for p, _ in pairs], [v for _, v in pairs]).statistic
    return (None if not np.isfinite(rho) else float(rho)), len(pairs)


# The sources of Phase 2's seeds (queued before CMA-ES starts; `enqueue_seeds`).
SEED_SOURCES = ("tuned_baseline", "proxy_top_k", "anchor")
# The study's record of the seed CMA-ES started from (phase2.healthy_start).
CMA_ES_START = "cma_es_start"
# ... and of its step size (phase2.cma_es_sigma).
CMA_ES_SIGMA = "cma_es_sigma0"


def trial_genome(trial, rule: str) -> Genome:
    """A trial's genome: its parameters read under the search's genome rule."""
    return Genome(**trial.params, genome_rule=rule)


def trial_best(trial, genome: dict | None = None) -> Best:
    """A scored trial as summary.json's `best` record (with who proposed it)."""
    return Best(genome=genome, genome_hash=trial.user_attrs.get("genome_hash"),
                trial=trial.number, search_fitness=trial.value,
                source=trial.user_attrs.get("source"), anchor=trial.user_attrs.get("anchor"))


def ranked_trials(trials: list) -> list:
    """The fully scored, first-scored (not a duplicate) trials of `trials`, best first
    (the earlier of two equal ones first)."""
    full = [t for t in fully_scored(trials) if t.user_attrs.get("duplicate_of") is None]
    return sorted(full, key=lambda t: (-t.value, t.number))


def best_trial(trials: list):
    """The first of `ranked_trials`, or None."""
    ranked = ranked_trials(trials)
    return ranked[0] if ranked else None


def phase2_summary(study: optuna.Study, popsize: int, seconds: float,
                   rejected: set[int] = frozenset()) -> Phase2Summary:
    """How Phase 2 went: its candidates per source, CMA-ES's generations, how many racing
    stopped (and how many of them within one SE of the incumbent), the best seed and what
    CMA-ES added over it on the search split. The best seed is the one CMA-ES started from
    (`healthy_start`: the best whose child passed the health check, else the best); without
    CMA-ES, the best seed not in `rejected` (the seeds whose child failed the health
    check)."""
    trials = scored_trials(study, 2)
    sources: dict[str, int] = {}
    for trial in trials:
        source = trial.user_attrs.get("source", "unknown")
        sources[source] = sources.get(source, 0) + 1
    start = study.user_attrs.get(CMA_ES_START)
    seed = (next(t for t in trials if t.number == start) if start is not None
            else best_trial([t for t in trials if t.user_attrs.get("source") in SEED_SOURCES
                             and t.number not in rejected]))
    cma_es = best_trial([t for t in trials if t.user_attrs.get("source") == "cma_es"])
    gain = None if seed is None or cma_es is None else cma_es.value - seed.value
    return Phase2Summary(trials=len(trials), seconds=seconds, sources=sources,
                         cma_es_generations=sources.get("cma_es", 0) // popsize,
                         cma_es_step=study.user_attrs.get(CMA_ES_SIGMA),
                         stopped_by_racing=sum(was_stopped(t) for t in trials),
                         stopped_within_one_se=stopped_within_one_se(trials),
                         best_seed=None if seed is None else trial_best(seed),
                         cma_es_gain=gain)


def find_duplicate(study: optuna.Study, trial: optuna.Trial, genome_hash: str,
                   poll_seconds: float = 1.0) -> float | None:
    """The value of an earlier trial of the same genome, waiting if it is being scored.

    Each worker records the hash on its trial before checking, so of two workers that
    drew the same genome at once, the one with the higher trial number always sees the
    other and waits for it: the same genome is never scored twice, even concurrently.
    """
    while True:
        twins = [t for t in study.get_trials(deepcopy=False,
                                             states=(TrialState.COMPLETE, TrialState.RUNNING))
                 if t.user_attrs.get("genome_hash") == genome_hash and t.number != trial.number
                 and t.user_attrs.get("duplicate_of") is None]
        done = [t for t in twins if t.state == TrialState.COMPLETE]
        if done:
            trial.set_user_attr("duplicate_of", done[0].number)
            return done[0].value
        if not any(t.number < trial.number for t in twins):
            return None
        time.sleep(poll_seconds)


def trial_table(study: optuna.Study) -> list[dict]:
    """Every scored trial as a flat row (for the report and evolution plot), with its
    in-memory health check where it had one."""
    verdicts = study.user_attrs.get("seed_health", {})
    findings = study.user_attrs.get(SEED_FINDINGS, {})
    rows = []
    for t in scored_trials(study):
        checked = {"health": verdicts[str(t.number)],
                   "probe_excess": findings.get(str(t.number), {}).get("probe_excess")
                   } if str(t.number) in verdicts else {}
        rows.append({**checked,
            "number": t.number, "phase": t.user_attrs.get("phase"),
            "source": t.user_attrs.get("source"), "anchor": t.user_attrs.get("anchor"),
            "fitness": t.value,
            "proxy_fitness": t.user_attrs.get("proxy_fitness"),
            "genome_hash": t.user_attrs.get("genome_hash"),
            "duplicate_of": t.user_attrs.get("duplicate_of"),
            "scores": t.user_attrs.get("scores"), "seconds": t.user_attrs.get("seconds"),
            "race": t.user_attrs.get("race"), "guard": t.user_attrs.get("guard"),
            "genome": dict(t.params),
            "finished": t.datetime_complete.isoformat() if t.datetime_complete else None,
        })
    return rows


def worker_name() -> str:
    return f"{platform.node()}:{os.getpid()}"


def worker_seed_offset() -> int:
    """A worker's offset to the search seed, so that workers sharing a study draw
    different genomes: from sha256 of host and PID, the same in every process (Python's
    `hash` of a string changes per process) and recorded on each trial."""
    digest = hashlib.sha256(worker_name().encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000
