"""A task file given by its path (`--tasks path/t.jsonl`, `--fitness path/t.jsonl=0.5`) is
keyed by that path in records and fitness weights, and shown by its stem `t` in tables and
results; two tasks of one run shown by one name are refused in one line."""

from __future__ import annotations

import json
import re

import pytest

from darwin_merge.cli import main
from darwin_merge.errors import UsageError
from darwin_merge.eval import evaluate
from darwin_merge.eval.tasks import resolve_tasks, task_label
from darwin_merge.evolve.recipe import parse_fitness
from darwin_merge.evolve.scoring import TIE_BREAK, fitness_of
from darwin_merge.report_tables import task_labels
from tiny_models import build_model, char_tokenizer


def task_file(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"query": f"Question: {i} plus one?", "choices": [str(i + 1), "x"], "gold": 0}
            for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_task_file_is_shown_by_its_stem(tmp_path):
    path = task_file(tmp_path / "sub" / "t.jsonl")
    assert task_label(path) == "t" and task_label("copa") == "copa"
    [task] = resolve_tasks([path])
    assert (task.name, task.label) == (path, "t")
    [by_option] = resolve_tasks([], task_file=path)  # --task-file: named by its stem already
    assert by_option.name == by_option.label == "t"
    # the evolve tables' column titles
    assert task_labels([path, "copa"]) == {path: "t", "copa": "copa"}


def test_eval_table_results_and_samples_show_the_stem(tiny_llama, tmp_path, capsys,
                                                      monkeypatch):
    from darwin_merge import cli

    monkeypatch.setattr(cli.out, "width", 250)  # a table row on one line
    path = task_file(tmp_path / "sub" / "t.jsonl")
    out = tmp_path / "out" / "results.json"
    assert main(["eval", str(tiny_llama), "--tasks", f"copa,{path}", "--limit", "2",
                 "--out", str(out), "--log-samples"]) == 0
    printed = capsys.readouterr().out
    assert path not in printed
    assert any(line.split("│")[1].strip() == "t" for line in printed.splitlines()
               if line.count("│") > 2)
    results = json.loads(out.read_text())["results"]
    assert results[path]["alias"] == "t" and results["copa"]["alias"] == "copa"  # key: path
    assert [p.name.split("_2")[0] for p in sorted(out.parent.glob("samples_t_*.jsonl"))] \
        == ["samples_t"]


def test_a_fitness_weight_still_maps_to_the_files_task(tmp_path):
    path = task_file(tmp_path / "sub" / "t.jsonl")
    weights = parse_fitness(f"{path}=0.5,copa=0.5")
    assert [t.label for t in resolve_tasks(list(weights))] == ["t", "copa"]
    scores = evaluate(build_model("llama"), char_tokenizer(), list(weights), limit=2,
                      progress=False)
    assert set(scores) == set(weights)
    assert fitness_of(scores, weights) == pytest.approx(sum(
        0.5 * (scores[t].signed_primary + TIE_BREAK * scores[t].mean_clipped_gold_logprob)
        for t in (path, "copa")))


def test_two_tasks_shown_by_one_name_are_refused(tmp_path):
    a, b = task_file(tmp_path / "a" / "t.jsonl"), task_file(tmp_path / "b" / "t.jsonl")
    with pytest.raises(UsageError, match=re.escape(f"tasks {a} and {b} would both be shown "
                                                   "as 't'")):
        resolve_tasks([a, b])
    with pytest.raises(UsageError, match="'t'"):
        resolve_tasks([a], task_file=b)
    with pytest.raises(UsageError, match="'copa'"):  # a file named like a shipped task
        resolve_tasks(["copa", task_file(tmp_path / "c" / "copa.jsonl")])
    assert len(resolve_tasks([a, a])) == 2  # one task named twice (a fitness task guarded)


def test_cli_refuses_two_files_of_one_stem_in_one_line(tiny_llama, tmp_path, capsys):
    a, b = task_file(tmp_path / "a" / "t.jsonl"), task_file(tmp_path / "b" / "t.jsonl")
    assert main(["eval", str(tiny_llama), "--tasks", f"{a},{b}"]) == UsageError.exit_code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "would both be shown as 't'" in err
