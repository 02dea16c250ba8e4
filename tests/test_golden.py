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


def test_a_change_in_the_real_snapshot_is_found_and_rounding_is_not():
    """Mutations of the committed snapshot (what the tiny demo really writes)."""
    import copy

    golden = golden_module()
    real = json.loads(golden.GOLDEN.read_text(encoding="utf-8"))
    assert golden.differences(real, copy.deepcopy(real)) == []

    def changed(edit):
        now = copy.deepcopy(real)
        edit(now["records"])
        return golden.differences(real, now)

    row = "/records/child/darwin_merge.json/tensors[0]/final_ratio"
    ratio = real["records"]["child/darwin_merge.json"]["tensors"][0]["final_ratio"]

    def nudge(factor):
        return lambda r: r["child/darwin_merge.json"]["tensors"][0].update(
            final_ratio=ratio * factor)

    assert changed(nudge(1 + 1e-12)) == []
    assert [line.split(":")[0] for line in changed(nudge(1 + 1e-8))] == [row]
    assert changed(lambda r: r["summary.json"]["best"].update(genome_hash="0" * 16)) == [
        f"/records/summary.json/best/genome_hash: "
        f"{real['records']['summary.json']['best']['genome_hash']!r}, now {'0' * 16!r}"]
    assert changed(lambda r: r["child/darwin_merge.json"]["tensors"].pop()) == [
        "/records/child/darwin_merge.json/tensors: "
        f"{len(real['records']['child/darwin_merge.json']['tensors'])} entries, now "
        f"{len(real['records']['child/darwin_merge.json']['tensors']) - 1}"]
