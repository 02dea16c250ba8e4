"""A re-run notices change: the study, the scan in RUN_DIR/scan and phase1.json carry
the identity of what made them. Also the search's user errors and worker seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from darwin_merge.errors import SearchError, StorageError
from darwin_merge.evolve.finish import pick_healthy
from darwin_merge.evolve.phase1 import OPTIMIZER
from darwin_merge.evolve.recipe import build_recipe, ensure_scan
from darwin_merge.evolve.run import run_evolve
from darwin_merge.evolve.study import fail_stale_trials, open_study
from darwin_merge.io.fingerprint import model_fingerprint
from darwin_merge.merge.plan import MergeSettings
from darwin_merge.scan import run_scan
from tiny_models import make_tiny, perturbed_copy

FITNESS = {"arc_easy": 0.5, "simple_arithmetic": 0.5}
SMALL = dict(trials=2, limit=3, phase1_steps=5, top_k=2, popsize=4,
             probe_max_tokens=16, probe_max_prompts=2)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    """A fresh (father, mother) per test: some tests rewrite the mother in place."""
    father = make_tiny("llama", tmp_path / "father", seed=0)
    return father, perturbed_copy(father, tmp_path / "mother", scale=0.3, seed=5)


@pytest.fixture
def scan(pair, tmp_path) -> Path:
    run_scan(*pair, tmp_path / "scan", max_tokens=16, max_prompts=2, progress=False)
    return tmp_path / "scan" / "scan.json"


def recipe(pair, out: Path, **kw):
    out.mkdir(parents=True, exist_ok=True)  # run_evolve makes it; open_study alone does not
    values = dict(father=pair[0], mother=pair[1], fitness=FITNESS, out=out, **SMALL)
    values.update(kw)
    return build_recipe(**values)


def retrain_mother(mother: Path, seed: int) -> None:
    """Replace the mother's weights in place: same folder, same header, other values."""
    perturbed_copy(mother, mother.parent / "new-mother", scale=0.3, seed=seed)
    for file in (mother.parent / "new-mother").iterdir():
        os.replace(file, mother / file.name)


def test_fingerprint_sees_new_weights_behind_the_same_header(pair):
    before = model_fingerprint(pair[1])
    assert model_fingerprint(pair[1]) == before
    retrain_mother(pair[1], seed=6)
    assert model_fingerprint(pair[1]) != before


@pytest.mark.parametrize("change, field", [
    ({"dtype": "bfloat16"}, "dtype"), ({"eval_dtype": "bfloat16"}, "eval_dtype"),
    ({"batch_size": 4}, "batch_size"),
    ({"limit": 4}, "limit"), ({"probe_max_tokens": 12}, "probe_max_tokens"),
    ({"scan_probe_sets": False}, "scan_probe_sets"),
])
def test_study_refuses_changed_score_settings(pair, tmp_path, change, field):
    first = recipe(pair, tmp_path / "run")
    open_study(first, optuna.samplers.RandomSampler())
    open_study(first, optuna.samplers.RandomSampler())  # the same search continues
    with pytest.raises(StorageError, match=f"different {field}\\)"):
        open_study(first.model_copy(update=change), optuna.samplers.RandomSampler())


def test_study_refuses_other_probe_sets(pair, tmp_path):
    """The health gate's probe sets are part of what the scores depend on: the same
    folder with an edited file, or the built-in sets, is another search."""
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "mine.jsonl").write_text('{"text": "one probe"}\n', encoding="utf-8")
    first = recipe(pair, tmp_path / "run", probes=probes)
    open_study(first, optuna.samplers.RandomSampler())
    open_study(first, optuna.samplers.RandomSampler())  # the same search continues
    with pytest.raises(StorageError, match="different probes_sha256"):
        open_study(first.model_copy(update={"probes": None}), optuna.samplers.RandomSampler())
    (probes / "mine.jsonl").write_text('{"text": "another probe"}\n', encoding="utf-8")
    with pytest.raises(StorageError, match="different probes_sha256"):
        open_study(first, optuna.samplers.RandomSampler())


def test_study_refuses_a_retrained_parent_in_the_same_folder(pair, scan, tmp_path):
    first = recipe(pair, tmp_path / "run", scan=scan)
    open_study(first, optuna.samplers.RandomSampler())
    retrain_mother(pair[1], seed=7)
    with pytest.raises(StorageError, match="different parents_sha256"):
        open_study(first, optuna.samplers.RandomSampler())
    scan.write_text(scan.read_text().replace('"father"', '"father" ', 1))  # another scan
    with pytest.raises(StorageError, match="scan_sha256"):
        open_study(first, optuna.samplers.RandomSampler())


def test_scan_in_run_dir_is_reused_only_for_the_same_parents_and_settings(pair, tmp_path):
    run = tmp_path / "run"
    first = recipe(pair, run)
    path = ensure_scan(first)
    written = path.stat().st_mtime_ns
    assert ensure_scan(first) == path and path.stat().st_mtime_ns == written  # reused
    ensure_scan(first.model_copy(update={"probe_max_prompts": 1}))
    rescanned = json.loads(path.read_text())
    assert rescanned["settings"]["max_prompts"] == 1
    written = path.stat().st_mtime_ns
    retrain_mother(pair[1], seed=8)
    ensure_scan(first.model_copy(update={"probe_max_prompts": 1}))
    assert path.stat().st_mtime_ns != written  # the mother changed: scanned again
    inputs = json.loads(path.read_text())["inputs"]
    assert inputs["mother"] == model_fingerprint(pair[1])


def test_phase1_is_recomputed_when_its_settings_change(pair, scan, tmp_path):
    run = tmp_path / "run"
    run_evolve(recipe(pair, run, scan=scan), finish_run=False)
    phase1 = json.loads((run / "phase1.json").read_text())
    assert phase1["steps"] == 5 and phase1["identity"]["phase1_steps"] == 5
    run_evolve(recipe(pair, run, scan=scan), finish_run=False)  # same: kept as it was
    assert json.loads((run / "phase1.json").read_text()) == phase1
    # a phase1.json from before the optimizer was recorded (the `cma` library's) is made again
    old = {**phase1, "identity": {k: v for k, v in phase1["identity"].items()
                                  if k != "optimizer"}}
    (run / "phase1.json").write_text(json.dumps(old))
    run_evolve(recipe(pair, run, scan=scan), finish_run=False)
    assert json.loads((run / "phase1.json").read_text())["identity"] == phase1["identity"]
    assert phase1["identity"]["optimizer"] == OPTIMIZER
    run_evolve(recipe(pair, run, scan=scan, phase1_steps=3), finish_run=False)
    assert json.loads((run / "phase1.json").read_text())["steps"] == 3
    # the trials record the worker that scored them and its seed offset
    study = optuna.load_study(study_name="darwin", storage=f"sqlite:///{run / 'study.db'}")
    attrs = [t.user_attrs for t in study.get_trials() if t.user_attrs.get("phase") == 2]
    assert attrs and all(a["worker"].endswith(f":{os.getpid()}") for a in attrs)
    assert len({a["worker_seed_offset"] for a in attrs}) == 1


@pytest.mark.parametrize("bad", ["missing.json", "."])
def test_missing_or_directory_scan_is_one_line_error_before_any_study(pair, tmp_path, bad):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "darwin_merge.cli", "evolve", "--father", str(pair[0]),
         "--mother", str(pair[1]), "--fitness", "arc_easy=1", "--out", str(run),
         "--scan", str(tmp_path / bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and "--scan" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (run / "study.db").exists()


def test_no_healthy_child_is_a_search_error_unless_warnings_are_allowed(pair, scan, tmp_path,
                                                                         monkeypatch):
    import darwin_merge.health as health

    run = tmp_path / "run"
    strict = recipe(pair, run, scan=scan)
    run_evolve(strict, finish_run=False)
    monkeypatch.setattr(health, "run_health", lambda *a, **k: {
        "verdict": "warning", "reasons": ["interference at layer(s) 2"]})
    study = open_study(strict, optuna.samplers.RandomSampler())
    with pytest.raises(SearchError, match="no healthy child .*--allow-warning"):
        pick_healthy(strict, study, MergeSettings(), scan)
    lenient = strict.model_copy(update={"allow_warning": True})
    trial, _, child, report, _ = pick_healthy(lenient, study, MergeSettings(), scan)
    assert report["verdict"] == "warning" and (child / "config.json").is_file()


def test_a_broken_card_package_is_an_error_not_a_skipped_card(pair, tmp_path, monkeypatch):
    from darwin_merge.evolve.run import _write_card

    monkeypatch.setitem(sys.modules, "darwin_merge.card.build", None)  # import fails
    with pytest.raises(ImportError):
        _write_card(recipe(pair, tmp_path / "run"))


def test_worker_seed_offset_is_pinned_for_a_host_and_pid(monkeypatch):
    """Python's str hash changes per process (PYTHONHASHSEED), so a pinned value can
    only hold if the offset does not use it; a change would give a resumed worker other
    genomes."""
    import darwin_merge.evolve.study as study

    monkeypatch.setattr(study, "worker_name", lambda: "node-7:4242")
    assert study.worker_seed_offset() == 2999
    monkeypatch.setattr(study, "worker_name", lambda: "node-7:4243")
    assert study.worker_seed_offset() != 2999


def test_a_trial_left_running_is_failed_and_its_genome_returned(tmp_path):
    """What a kill leaves in the SQLite study: a RUNNING trial that no process scores."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    killed = optuna.create_study(storage=storage, study_name="darwin")
    killed.ask().suggest_float("global_ratio", 0.0, 1.0)
    killed.tell(killed.ask(), 0.5)  # a scored one stays as it is
    study = optuna.load_study(storage=storage, study_name="darwin")
    drawn = study.trials[0].params
    assert fail_stale_trials(study) == [drawn]
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE]
    assert fail_stale_trials(study) == []


def test_a_worker_that_loses_the_schema_race_on_sqlite_retries(tmp_path, monkeypatch):
    """Two processes opening a fresh SQLite study at once both write Optuna's schema; the
    loser gets SQLite's own IntegrityError (made here by the real driver) and must use the
    winner's tables, not stop (it made test_resume_after_sigkill flaky)."""
    import sqlalchemy as sa

    from darwin_merge.evolve import study as study_module

    engine = sa.create_engine("sqlite://")
    with engine.begin() as connection:
        connection.execute(sa.text("create table alembic_version (version_num text primary key)"))
        connection.execute(sa.text("insert into alembic_version values ('v3.2.0.a')"))
    with pytest.raises(sa.exc.IntegrityError) as lost, engine.begin() as connection:
        connection.execute(sa.text("insert into alembic_version values ('v3.2.0.a')"))
    real, calls = study_module.RDBStorage, []

    def racing_storage(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise lost.value
        return real(*args, **kwargs)

    monkeypatch.setattr(study_module, "RDBStorage", racing_storage)
    monkeypatch.setattr(study_module.time, "sleep", lambda seconds: None)
    storage = study_module.open_storage(f"sqlite:///{tmp_path / 'study.db'}", distributed=False)
    assert len(calls) == 2 and isinstance(storage, real)
