"""Run records (darwin_merge/records/): the files a real tiny `darwin evolve` writes parse
into their models and are exactly what the models write back; a file with a wrong type, an
unknown key or a newer schema is refused with one line (RecordError, exit 2).

The evaluation results (lm-eval's layout) are RUN_DIR/holdout/results_<model>.json here."""

from __future__ import annotations

import json
import shutil

import pytest

from darwin_merge.cli import main
from darwin_merge.errors import RecordError, UsageError
from darwin_merge.records import (
    SCHEMA_VERSION,
    EvalResults,
    HealthRecord,
    MergeRecord,
    Phase1Record,
    ScanRecord,
    SummaryRecord,
    Trials,
    read_record,
    record_json,
)

# every record of a run: (model, path inside RUN_DIR, a wrong-typed value, where it goes)
RECORDS = {
    "darwin_merge.json": (MergeRecord, "child/darwin_merge.json", ("modes", "dare_ties"), "x"),
    "scan.json": (ScanRecord, "scan/scan.json", ("num_layers",), "four"),
    "health.json": (HealthRecord, "health/health.json", ("flagged_layers",), "0, 1"),
    "summary.json": (SummaryRecord, "summary.json", ("phase2", "trials"), "four"),
    "trials.json": (Trials, "trials.json", (0, "number"), [0]),
    "phase1.json": (Phase1Record, "phase1.json", ("steps",), {"n": 10}),
    "results_child.json": (EvalResults, "holdout/results_child.json", ("n-shot", "arc_easy"),
                           "zero"),
}


@pytest.fixture(scope="module")
def run_dir(evolved_run):
    return evolved_run["run"]


def _set(data, where: tuple, value):
    for key in where[:-1]:
        data = data[key]
    data[where[-1]] = value


@pytest.mark.parametrize("name", RECORDS)
def test_each_record_of_a_real_run_parses_and_dumps_to_the_same_json(run_dir, name):
    model, rel, _, _ = RECORDS[name]
    text = (run_dir / rel).read_text()
    record = read_record(model, run_dir / rel)
    # same keys in the same order, same values: what the producer wrote is the model's form
    assert json.dumps(record_json(record)) == json.dumps(json.loads(text))


@pytest.mark.parametrize("name", RECORDS)
def test_a_record_with_a_wrong_type_is_refused_in_one_line(run_dir, tmp_path, name):
    model, rel, where, value = RECORDS[name]
    data = json.loads((run_dir / rel).read_text())
    _set(data, where, value)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError) as refused:
        read_record(model, path)
    message = str(refused.value)
    assert "\n" not in message and str(path) in message
    assert ".".join(str(k) for k in where) in message


def test_unknown_key_newer_schema_and_broken_json_are_refused(run_dir, tmp_path):
    data = json.loads((run_dir / "child" / "darwin_merge.json").read_text())
    path = tmp_path / "darwin_merge.json"
    path.write_text(json.dumps({**data, "ratios": [0.5]}))
    with pytest.raises(RecordError, match="ratios"):
        read_record(MergeRecord, path)
    path.write_text(json.dumps({**data, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(RecordError, match="newer than this Darwin"):
        read_record(MergeRecord, path)
    path.write_text(json.dumps(data)[:-40])
    with pytest.raises(RecordError, match="not readable JSON"):
        read_record(MergeRecord, path)


@pytest.mark.parametrize("name, key", [("health.json", "verdict"), ("health.json", "settings"),
                                       ("scan.json", "layers")])
def test_a_record_without_a_key_its_producer_always_writes_is_refused(run_dir, tmp_path, name,
                                                                     key):
    """No reader guesses at a key the producer always writes (health.json's verdict was
    optional once, for files days older than the check's settings)."""
    model, rel, _, _ = RECORDS[name]
    data = json.loads((run_dir / rel).read_text())
    del data[key]
    path = tmp_path / name
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=key):
        read_record(model, path)


def test_a_file_written_before_schema_version_reads_as_version_one(run_dir, tmp_path):
    data = json.loads((run_dir / "child" / "darwin_merge.json").read_text())
    assert data.pop("schema_version") == SCHEMA_VERSION
    path = tmp_path / "darwin_merge.json"
    path.write_text(json.dumps(data))
    record = read_record(MergeRecord, path)
    assert record.schema_version == SCHEMA_VERSION
    assert record.genome_hash == data["genome_hash"] and len(record.tensors) == len(
        data["tensors"])


def test_darwin_card_on_a_malformed_summary_is_one_line_exit_2(run_dir, tmp_path, capsys):
    run = shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("*.png"))
    summary = json.loads((run / "summary.json").read_text())
    summary["holdout"]["tasks"]["arc_easy"]["n"] = "six"
    (run / "summary.json").write_text(json.dumps(summary))
    card_before = (run / "child" / "README.md").read_bytes()
    capsys.readouterr()
    assert main(["card", str(run / "child"), "--run", str(run)]) == UsageError.exit_code
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("darwin")]
    assert len(err) == 1 and "holdout.tasks.arc_easy.n" in err[0]
    assert str(run / "summary.json") in err[0]
    assert (run / "child" / "README.md").read_bytes() == card_before  # nothing rewritten
