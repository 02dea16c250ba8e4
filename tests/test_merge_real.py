"""The real SmolLM2-135M pair: the merged child still knows the capital of France."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from darwin_merge.genome import Genome
from darwin_merge.io.loading import load_model, load_tokenizer
from darwin_merge.merge import merge_models
from tiny_models import perturbed_copy

pytestmark = [pytest.mark.real, pytest.mark.slow]


def answer(folder, question: str) -> str:
    tokenizer, model = load_tokenizer(folder), load_model(folder)
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                         tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=20, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def perturbed_mother(father: Path) -> Path:
    """The seeded perturbed SmolLM2 the benchmark uses too (.cache/bench/), made once."""
    mother = father.resolve().parents[1] / "bench" / "smollm2-perturbed"
    if not mother.exists():
        tmp = mother.parent / f".{mother.name}.tmp-{os.getpid()}"
        perturbed_copy(father, tmp, scale=0.02, seed=7)
        os.replace(tmp, mother)
    return mother


def test_smollm2_pair_merges_and_answers_paris(smollm2, tmp_path_factory):
    work = tmp_path_factory.mktemp("smol-merge")
    mother = perturbed_mother(Path(smollm2))
    genome = Genome(ffn_ratio=0.7, attn_ratio=0.3, density_a=0.9, density_b=0.8)
    child = merge_models(smollm2, mother, work / "child", genome=genome, progress=False)
    report = json.loads((child / "darwin_merge.json").read_text())
    assert len(report["tensors"]) == 272 and report["modes"].get("dare_ties", 0) > 200
    assert "Paris" in answer(child, "What is the capital of France?")
