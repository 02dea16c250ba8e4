"""`darwin eval --log-samples`: per-item records in lm-eval's `--log_samples` shape, and the
one-line refusals of `--backend lm-eval` (the backend itself: tests/test_lm_eval_backend.py)."""

from __future__ import annotations

import json
import sys

import pytest

from darwin_merge.cli import main
from darwin_merge.eval import evaluate, evaluate_path, registry
from darwin_merge.eval.report import write_results
from tiny_models import build_model, char_tokenizer

SAMPLE_KEYS = ["doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter",
               "metrics", "doc_hash", "prompt_hash", "target_hash"]


@pytest.fixture(scope="module")
def written(tiny_llama, tmp_path_factory):
    """The files `darwin eval --out --log-samples` writes for a choice and a lambada task."""
    record = evaluate_path(tiny_llama, "copa,lambada_openai", split="holdout", limit=4,
                           batch_size=8, progress=False, log_samples=True)
    folder = tmp_path_factory.mktemp("logged")
    write_results(record, folder / "results.json")
    return record, folder


def read_samples(folder, task: str) -> list[dict]:
    [path] = folder.glob(f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_samples_file_per_task_beside_the_results(written):
    record, folder = written
    names = sorted(p.name for p in folder.iterdir())
    assert names[0] == "results.json" and len(names) == 3
    assert names[1].startswith("samples_copa_") and names[2].startswith("samples_lambada_openai_")
    stamps = {name.removesuffix(".jsonl").rsplit("_", 1)[1] for name in names[1:]}
    assert len(stamps) == 1  # one date for the run, as lm-eval names its files
    results = json.loads((folder / "results.json").read_text())
    assert set(results["task_hashes"]) == {"copa", "lambada_openai"}
    assert "logged_samples" not in results["darwin"]["results"]["copa"]


def test_choice_samples_hold_the_requests_and_answers(written):
    record, folder = written
    samples, result = read_samples(folder, "copa"), record["results"]["copa"]
    assert [s["doc_id"] for s in samples] == result["item_ids"]
    assert all(list(s)[:len(SAMPLE_KEYS)] == SAMPLE_KEYS for s in samples)
    prompt = registry()["copa"].prompt
    for s in samples:
        doc, requests = s["doc"], list(s["arguments"].values())
        assert [r["arg_1"] for r in requests] == [" " + c for c in doc["choices"]]
        assert {r["arg_0"] for r in requests} == {prompt.format(**doc)}
        assert s["target"] == str(doc["gold"]) and s["filter"] == "none"
        logprobs = [float(lp) for lp, _greedy in s["filtered_resps"]]
        assert s["resps"] == [[pair] for pair in s["filtered_resps"]]
        assert s["acc"] == float(logprobs.index(max(logprobs)) == doc["gold"])
        assert s["metrics"] == ["acc", "acc_norm"]
    assert sum(s["acc"] for s in samples) / len(samples) == result["acc"]
    assert sum(s["acc_norm"] for s in samples) / len(samples) == result["acc_norm"]


def test_lambada_samples_target_the_last_word(written):
    record, folder = written
    samples = read_samples(folder, "lambada_openai")
    for s in samples:
        assert s["target"] == " " + s["doc"]["continuation"]
        [[_logprob, greedy]] = s["filtered_resps"]
        assert s["acc"] == float(greedy == "True")
    assert len({s["prompt_hash"] for s in samples}) == len(samples)
    assert sum(s["acc"] for s in samples) / 4 == record["results"]["lambada_openai"]["acc"]


def test_generative_samples_hold_every_generation():
    model, tok = build_model("llama"), char_tokenizer()
    result = evaluate(model, tok, ["gsm8k"], limit=2, batch_size=2, samples=2,
                      max_new_tokens=4, log_samples=True)["gsm8k"]
    samples = result.logged_samples
    assert [s["doc_id"] for s in samples] == result.item_ids
    for s in samples:
        [(prompt, settings)] = s["arguments"]
        assert prompt.startswith(s["doc"]["question"]) and settings["max_gen_toks"] == 4
        [generations] = s["resps"]
        assert len(generations) == 2 and len(s["filtered_resps"][0]) == 2
        assert s["target"] == s["doc"]["answer"] and s["filter"] == "extract"
        assert s["metrics"] == ["exact_match", "maj@2"]
    assert samples[0]["resps"][0][0] == result.generation["first_generation"]
    assert sum(s["maj@2"] for s in samples) / 2 == result.metrics["maj@2"]


def test_samples_validate_against_lm_eval_sample_schema(written, tmp_path):
    """Every line, of a choice, a lambada and a generative task, is an lm-eval SampleResult
    (strict: no coercion), where lm-eval is installed."""
    schema = pytest.importorskip("lm_eval.result_schema")
    from pydantic import TypeAdapter

    record, folder = written
    generative = evaluate_path(record["model"], "gsm8k", limit=2, max_new_tokens=4,
                               progress=False, log_samples=True)
    write_results(generative, tmp_path / "results.json")
    files = [*folder.glob("samples_*.jsonl"), *tmp_path.glob("samples_*.jsonl")]
    assert len(files) == 3
    adapter = TypeAdapter(schema.SampleResult)
    for path in files:
        for line in path.read_text().splitlines():
            adapter.validate_python(json.loads(line), strict=True)


def test_no_samples_unless_asked(tiny_llama, tmp_path):
    record = evaluate_path(tiny_llama, "copa", limit=2, progress=False)
    assert "samples" not in record and "logged_samples" not in record["results"]["copa"]
    write_results(record, tmp_path / "r.json")
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_log_samples_needs_out(tiny_llama, capsys):
    assert main(["eval", str(tiny_llama), "--tasks", "copa", "--log-samples"]) == 2
    assert "give --out too" in capsys.readouterr().err


def test_lm_eval_backend_without_the_extra_says_how_to_install(tiny_llama, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # an import of it now fails
    assert main(["eval", str(tiny_llama), "--backend", "lm-eval", "--tasks", "arc_easy"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'darwin-merge[lm-eval]'" in err and "\n" not in err


def test_lm_eval_backend_refuses_darwin_only_options(tiny_llama, capsys):
    assert main(["eval", str(tiny_llama), "--backend", "lm-eval", "--tasks", "arc_easy",
                 "--split", "holdout"]) == 2
    assert "--split applies to --backend darwin only" in capsys.readouterr().err
    assert main(["eval", str(tiny_llama), "--tasks", "copa", "--lm-eval-include", "."]) == 2
    assert "--lm-eval-include applies to --backend lm-eval only" in capsys.readouterr().err
