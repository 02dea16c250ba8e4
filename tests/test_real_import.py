"""Real models from PyPI packages: imported, loadable without GGUF, and answering."""

from __future__ import annotations

import pytest
import torch

from darwin_merge.inspection import inspect_model

pytestmark = pytest.mark.real


def test_smollm2_answers_paris(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == model.config.eos_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_smollm2_inspection(smollm2):
    report = inspect_model(smollm2)
    assert report["family"] == "llama" and report["num_layers"] == 30
    assert report["unclassified"] == []
    assert 134_000_000 < report["num_params"] < 136_000_000


def test_gemma3_imports_and_classifies(gemma3_real):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = inspect_model(gemma3_real)
    assert report["family"] == "gemma3" and report["num_layers"] == 18
    assert report["unclassified_decoder"] == [] and report["unclassified"] == []
    tok = AutoTokenizer.from_pretrained(gemma3_real)
    model = AutoModelForCausalLM.from_pretrained(gemma3_real).eval()
    ids = tok("Paris is the capital of", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "France" in text, text


def test_gguf_import_draws_no_transformers_bar(tmp_path, capfd):
    """An import's log holds darwin's lines, not transformers' own tqdm bars for loading
    and writing (one per tensor file, mixed into rich's progress in a demo's log)."""
    from transformers.utils import logging as transformers_logging

    from darwin_merge.io.gguf_import import import_gguf
    from darwin_merge.realmodels import gguf_path

    transformers_logging.enable_progress_bar()
    import_gguf(gguf_path("smollm2", tmp_path), tmp_path / "smollm2")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err
    assert (tmp_path / "smollm2" / "model.safetensors").is_file()
    assert transformers_logging.is_progress_bar_enabled()
