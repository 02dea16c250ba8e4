"""Results files in lm-evaluation-harness's layout: `darwin eval --out` and the holdout files.

Where lm-eval is installed (the `[lm-eval]` extra), its own table code reads the file and
its result schema names every top-level key; elsewhere that test is skipped (under `make
test`, which installs the extra, it fails instead: tests/conftest.py).
"""

from __future__ import annotations

import json

import pytest

from darwin_merge.eval import evaluate, evaluate_path, registry, select_items
from darwin_merge.eval.report import results_file, write_results
from darwin_merge.eval.results import stored
from darwin_merge.evolve.holdout import write_holdout_results
from darwin_merge.evolve.recipe import Recipe
from tiny_models import build_model, char_tokenizer


@pytest.fixture(scope="module")
def record(tiny_llama):
    return evaluate_path(tiny_llama, "copa,lambada_openai", split="holdout", limit=3,
                         batch_size=8, progress=False)


def test_eval_results_file_has_lm_eval_layout(record, tmp_path):
    data = json.loads(write_results(record, tmp_path / "results.json").read_text())
    copa, lambada = data["results"]["copa"], data["results"]["lambada_openai"]
    assert copa["acc,none"] == record["results"]["copa"]["acc"]
    assert copa["acc_norm_stderr,none"] == record["results"]["copa"]["acc_norm_stderr"]
    assert lambada["perplexity,none"] == record["results"]["lambada_openai"]["perplexity"]
    assert copa["alias"] == "copa" and copa["sample_len"] == 3
    assert data["higher_is_better"]["lambada_openai"] == {"acc": True, "perplexity": False}
    assert data["n-shot"] == {"copa": 0, "lambada_openai": 0}
    holdout_items = len(select_items(registry()["copa"], "holdout", None))
    assert data["n-samples"]["copa"] == {"original": holdout_items, "effective": 3}
    assert data["configs"]["copa"]["dataset_path"] == "aps/super_glue"
    assert data["configs"]["lambada_openai"]["output_type"] == "loglikelihood"
    assert data["config"]["model_args"] == f"pretrained={record['model']}"
    # darwin's own fields under their key; none of them among lm-eval's metric keys
    assert data["darwin"]["results"]["copa"]["item_ids"] == record["results"]["copa"]["item_ids"]
    assert "mean_gold_logprob" in data["darwin"]["results"]["copa"]
    assert not any(key.startswith("mean_gold_logprob") for key in copa)
    assert data["darwin"]["config_sha256"] == record["config_sha256"]


def test_lm_eval_reads_a_darwin_results_file(record):
    lm_eval_utils = pytest.importorskip("lm_eval.utils")
    from lm_eval.result_schema import EvalResults
    from pydantic import TypeAdapter

    data = json.loads(json.dumps(results_file(record)))
    table = lm_eval_utils.make_table(data)
    copa_row = next(line for line in table.splitlines() if line.startswith("|copa"))
    assert f"{record['results']['copa']['acc']:.4f}" in copa_row and "↑" in copa_row
    ppl_row = next(line for line in table.splitlines() if "|perplexity" in line)
    assert "↓" in ppl_row
    assert set(data) - set(EvalResults.__annotations__) == {"darwin"}
    # strict validation against the schema; `configs` left out: lm-eval's own files do not
    # fit its `dict[str, str | bool | None]` either (their metric_list is a list)
    TypeAdapter(EvalResults).validate_python(
        {k: v for k, v in data.items() if k != "configs"}, strict=True)


def test_holdout_results_file_per_model(tmp_path):
    model, tok = build_model("llama"), char_tokenizer()
    scores = evaluate(model, tok, ["copa"], split="holdout", limit=2, batch_size=4,
                      log_samples=True)
    logged = {"copa": scores["copa"].logged_samples}
    recipe = Recipe(father=tmp_path, mother=tmp_path, fitness={"copa": 1.0}, out=tmp_path,
                    holdout_limit=2)
    for _ in range(2):  # a second finish replaces the samples, it does not add to them
        path = write_holdout_results(recipe, "child", stored(scores), logged)
    data = json.loads(path.read_text())
    assert path == tmp_path / "holdout" / "results_child.json"
    assert data["results"]["copa"]["acc,none"] == scores["copa"].primary
    assert data["config"]["split"] == "holdout" and data["config"]["limit"] == 2
    assert "logged_samples" not in data["darwin"]["results"]["copa"]
    [samples] = (tmp_path / "holdout" / "samples_child").iterdir()
    assert samples.name.startswith("samples_copa_") and samples.suffix == ".jsonl"
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [s["doc_id"] for s in lines] == scores["copa"].item_ids
    assert set(data["task_hashes"]) == {"copa"}
