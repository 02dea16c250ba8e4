"""The golden tiny run's comparator (scripts/golden-run.py): what changes from run to run by
nature is masked, anything else that changes is reported, a tensor's last bit included."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "golden-run.py"


def golden_module():
    spec = importlib.util.spec_from_file_location("golden_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(folder: Path, fitness: float, weight: torch.Tensor, created: str,
              seconds: float) -> Path:
    (folder / "child").mkdir(parents=True)
    summary = {"created": created, "fitness": fitness, "n": 100,
               "phase2": {"seconds": seconds, "note": f"24 candidates in {seconds:.0f} s"},
               "scan": str(folder / "scan" / "scan.json"), "best": {"genome_hash": "b599"}}
    (folder / "summary.json").write_text(json.dumps(summary))
    save_file({"w": weight}, folder / "child" / "model.safetensors")
    return folder


def test_what_changes_by_nature_is_masked_and_nothing_else(tmp_path):
    golden = golden_module()
    weight = torch.linspace(-1, 1, 64)
    first = golden.snapshot(write_run(tmp_path / "a", 0.7, weight, "2026-12-06T10:00:00", 277.0))
    again = golden.snapshot(write_run(tmp_path / "b", 0.7 * (1 + 1e-12), weight.clone(),
                                      "2026-12-07T11:30:00", 301.5))
    assert golden.differences(first, again) == []  # another day, folder and duration

    flipped = weight.clone()
    flipped.view(torch.int32)[3] ^= 1  # the last bit of one element
    changed = golden.snapshot(write_run(tmp_path / "c", 0.7 * (1 + 1e-8), flipped,
                                        "2026-12-06T10:00:00", 277.0))
    found = golden.differences(first, changed)
    assert any(line.startswith("/child_tensors/w") for line in found)
    assert any(line.startswith("/records/summary.json/fitness") for line in found)
    assert len(found) == 2


def test_a_changed_string_key_or_count_is_a_difference():
    golden = golden_module()
    record = {"best": {"genome_hash": "b599"}, "n": 100, "rows": [1, 2]}
    assert golden.differences(record, {**record, "best": {"genome_hash": "c001"}}) == [
        "/best/genome_hash: 'b599', now 'c001'"]
    assert golden.differences(record, {**record, "n": 100.0}) == ["/n: 100, now 100.0"]
    assert golden.differences(record, {**record, "rows": [1, 2, 3]}) == [
        "/rows: 2 entries, now 3"]
    assert golden.differences(record, {**record, "extra": 1}) == ["/extra: new"]
