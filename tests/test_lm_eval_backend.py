"""`darwin eval --backend lm-eval`: lm-eval scores darwin's shipped items as darwin does.

The items are the first arc_easy items of darwin's own file, given to lm-eval as a task YAML
of the user's own over local JSONL (`dataset_path: json`), so nothing reaches the network.
Skipped where lm-eval (the `[lm-eval]` extra) is not installed; under `make test`, which
installs it, they fail instead (tests/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter

from darwin_merge.cli import main
from darwin_merge.eval import evaluate_path, registry, select_items
from darwin_merge.eval.lm_eval_backend import evaluate_path_lm_eval
from darwin_merge.eval.report import write_results

N_ITEMS = 6


@pytest.fixture(scope="module", autouse=True)
def lm_eval_utils():
    """Skips each test, not the module at collection, so that the skip can become a failure."""
    return pytest.importorskip("lm_eval.utils")


def task_yaml(items, cache) -> str:
    """lm-eval's multiple-choice task over local items, prompted as darwin's arc_easy."""
    return yaml.safe_dump({
        "task": "darwin_arc_easy", "dataset_path": "json", "test_split": "test",
        "dataset_kwargs": {"data_files": {"test": str(items)}, "cache_dir": str(cache)},
        "output_type": "multiple_choice", "doc_to_text": "{{query}}\nAnswer:",
        "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}",
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]})


@pytest.fixture(scope="module")
def arc_task(tmp_path_factory) -> Path:
    """A folder holding an lm-eval task YAML over darwin's first arc_easy items."""
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    items = select_items(registry()["arc_easy"], "all", N_ITEMS)
    (folder / "arc.jsonl").write_text("".join(json.dumps(it.doc) + "\n" for it in items))
    assert registry()["arc_easy"].prompt == "{query}\nAnswer:"  # the YAML's doc_to_text
    (folder / "darwin_arc_easy.yaml").write_text(task_yaml(folder / "arc.jsonl",
                                                           folder / "cache"))
    return folder


@pytest.fixture(scope="module")
def both(tiny_llama, arc_task):
    darwin = evaluate_path(tiny_llama, "arc_easy", limit=N_ITEMS, batch_size=4,
                           progress=False, log_samples=True)
    lm_eval = evaluate_path_lm_eval(tiny_llama, "darwin_arc_easy", batch_size=4,
                                    include_path=arc_task, log_samples=True)
    return darwin, lm_eval


def test_both_backends_agree_item_for_item(both):
    darwin, lm_eval = both
    ours, theirs = darwin["samples"]["arc_easy"], lm_eval["samples"]["darwin_arc_easy"]
    assert len(ours) == len(theirs) == N_ITEMS
    for a, b in zip(ours, theirs, strict=True):
        assert a["doc_id"] == b["doc_id"] and a["doc"] == b["doc"]
        for key in ("doc_hash", "prompt_hash", "target_hash", "acc", "acc_norm", "filter"):
            assert a[key] == b[key], key
        assert [list(r) for r in a["arguments"]] == b["arguments"]
        for (lp_a, greedy_a), (lp_b, greedy_b) in zip(a["filtered_resps"], b["filtered_resps"],
                                                       strict=True):
            assert lp_a == pytest.approx(lp_b, rel=1e-4, abs=1e-4) and greedy_a == greedy_b
    ours_scores = darwin["results"]["arc_easy"]
    theirs_scores = lm_eval["results"]["darwin_arc_easy"]
    for metric in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr"):
        assert ours_scores[metric] == pytest.approx(theirs_scores[metric]), metric


def test_unknown_lm_eval_task_is_one_line_error(tiny_llama, arc_task, capsys):
    assert main(["eval", str(tiny_llama), "--backend", "lm-eval", "--tasks", "no_such_task",
                 "--lm-eval-include", str(arc_task)]) == 2
    assert "lm-eval has no task 'no_such_task'" in capsys.readouterr().err


def test_lm_eval_backend_files_read_by_lm_eval(both, lm_eval_utils, tmp_path):
    from lm_eval.result_schema import EvalResults

    datasets = pytest.importorskip("datasets")
    _, lm_eval = both
    path = write_results(lm_eval, tmp_path / "results.json")
    data = json.loads(path.read_text())
    row = next(line for line in lm_eval_utils.make_table(data).splitlines()
               if line.startswith("|darwin_arc_easy"))
    assert f"{lm_eval['results']['darwin_arc_easy']['acc']:.4f}" in row
    assert data["darwin"]["backend"] == "lm-eval" and "darwin_arc_easy" in data["task_hashes"]
    TypeAdapter(EvalResults).validate_python(  # `configs`: see test_lm_eval_layout.py
        {k: v for k, v in data.items() if k != "configs"}, strict=True)
    [samples] = tmp_path.glob("samples_darwin_arc_easy_*.jsonl")
    loaded = datasets.load_dataset("json", data_files=str(samples), split="train",
                                   cache_dir=str(tmp_path / "cache"))
    assert loaded["doc_id"] == list(range(N_ITEMS))


def test_darwin_samples_load_as_lm_eval_samples_do(both, tmp_path):
    """lm-eval writes its samples so that `datasets` loads them; darwin's files load too."""
    datasets = pytest.importorskip("datasets")
    darwin, _ = both
    write_results(darwin, tmp_path / "results.json")
    [samples] = tmp_path.glob("samples_arc_easy_*.jsonl")
    loaded = datasets.load_dataset("json", data_files=str(samples), split="train",
                                   cache_dir=str(tmp_path / "cache"))
    assert loaded["doc_id"] == darwin["results"]["arc_easy"]["item_ids"]
    assert loaded["target"] == [str(it["doc"]["gold"]) for it in darwin["samples"]["arc_easy"]]
