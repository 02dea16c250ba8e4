"""The CLI: one-line errors with exit codes, JSON output, comparisons."""

from __future__ import annotations

import json
import subprocess
import sys

from darwin_merge.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "darwin_merge.cli", *args],
                          capture_output=True, text=True)


def test_inspect_json(tiny_llama, capsys):
    assert main(["inspect", str(tiny_llama), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == "llama" and report["num_layers"] == 4


def test_inspect_two_models_reports_differences(tiny_dir, capsys):
    from tiny_models import build_model, save_model

    a = save_model(build_model("llama", n_layers=4), tiny_dir / "cmp-a")
    b = save_model(build_model("llama", n_layers=6), tiny_dir / "cmp-b")
    assert main(["inspect", str(a), str(b), "--json"]) == 0
    diff = json.loads(capsys.readouterr().out)["comparison"]
    assert not diff["mergeable"] and "model.layers.5.mlp.up_proj.weight" in diff["only_in_b"]


def test_missing_model_is_one_line_error(tmp_path):
    proc = run("inspect", str(tmp_path / "nope"))
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no such model folder" in proc.stderr


def test_bad_gguf_is_one_line_error(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGML nonsense")
    proc = run("import-gguf", str(bad), str(tmp_path / "out"))
    assert proc.returncode == 3 and "not a GGUF file" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_option_is_usage_error():
    proc = run("inspect", "--no-such-flag")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
