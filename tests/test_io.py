"""Reading and writing model folders: lazy, bit-exact, atomic, and strict on bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from darwin_merge.errors import ModelFormatError, OutputError
from darwin_merge.io import ModelSource, ModelWriter, atomic_output_dir
from darwin_merge.io.writer import copy_side_files, write_config


def test_round_trip_is_bit_exact(tiny_model, tmp_path):
    _, folder = tiny_model
    out = tmp_path / "copy"
    with ModelSource(folder) as src, atomic_output_dir(out) as tmp:
        writer = ModelWriter(tmp, max_shard_bytes=200_000)
        for name in src.names:
            writer.add(name, src.get(name))
        files = writer.finish()
        write_config(src.config, tmp)
        copy_side_files(folder, tmp)
    assert len(files) > 1 and (out / "model.safetensors.index.json").is_file()
    with ModelSource(folder) as a, ModelSource(out) as b:
        assert a.names == b.names
        for name in a.names:
            ta, tb = a.get(name), b.get(name)
            assert ta.dtype == tb.dtype and ta.shape == tb.shape
            assert torch.equal(ta.reshape(-1).view(torch.uint8), tb.reshape(-1).view(torch.uint8))
    assert (out / "tokenizer.json").is_file()


def test_written_folder_loads_in_transformers(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "loadable"
    with ModelSource(tiny_llama) as src, atomic_output_dir(out) as tmp:
        writer = ModelWriter(tmp)
        for name in src.names:
            writer.add(name, src.get(name))
        writer.finish()
        write_config(src.config, tmp, torch.float32)
    model = AutoModelForCausalLM.from_pretrained(out)
    logits = model(torch.tensor([[1, 5, 6]])).logits
    assert torch.isfinite(logits).all()


def test_load_model_draws_no_transformers_bar_and_leaves_its_switches(tiny_llama, capfd):
    """darwin's progress is rich's alone: transformers' "Loading weights" tqdm bar (one
    per load, dozens in a search's log) and its warnings are off while darwin loads, and
    the caller's settings back after (its bar switch, its logger's level)."""
    import logging

    from transformers.utils import logging as transformers_logging

    from darwin_merge.io.loading import load_model

    logger = logging.getLogger("transformers")
    level = logger.level
    transformers_logging.enable_progress_bar()
    logger.setLevel(logging.INFO)
    try:
        assert load_model(tiny_llama) is not None
        assert "Loading weights" not in capfd.readouterr().err
        assert transformers_logging.is_progress_bar_enabled()
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(level)


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "child"
    with pytest.raises(RuntimeError), atomic_output_dir(out) as tmp:
        (tmp / "partial.txt").write_text("x")
        raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused(tmp_path):
    (tmp_path / "child").mkdir()
    with pytest.raises(OutputError, match="already exists"), atomic_output_dir(tmp_path / "child"):
        pass


def test_killed_write_leaves_no_complete_folder(tmp_path):
    script = textwrap.dedent(f"""
        import time, torch
        from darwin_merge.io import ModelWriter, atomic_output_dir
        with atomic_output_dir({str(tmp_path / 'child')!r}) as tmp:
            w = ModelWriter(tmp, max_shard_bytes=1000)
            w.add("a", torch.zeros(1000))
            w.add("b", torch.zeros(1000))
            print("writing", flush=True)
            time.sleep(60)
            w.finish()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "child").exists()


@pytest.mark.parametrize("case", ["missing", "no_weights", "truncated", "escape_index", "pickle",
                                  "remote_code"])
def test_bad_folders_refused(case, tiny_llama, tmp_path):
    folder = tmp_path / case
    if case != "missing":
        folder.mkdir()
        (folder / "config.json").write_text((tiny_llama / "config.json").read_text())
    if case == "truncated":
        data = (tiny_llama / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    if case == "escape_index":
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"x": "../outside.safetensors"}}))
    if case == "pickle":
        (folder / "pytorch_model.bin").write_bytes(b"not really")
    if case == "remote_code":
        cfg = json.loads((tiny_llama / "config.json").read_text())
        cfg["auto_map"] = {"AutoModelForCausalLM": "evil.Model"}
        (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError) as err:
        ModelSource(folder)
    assert str(folder) in str(err.value)


@pytest.mark.parametrize("metadata, expected", [
    ({"general.source.repo_url": "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"},
     "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ({"general.source.url": "https://example.com/weights", "general.name": "x"}, None),
    ({}, None),
])
def test_gguf_import_records_the_source_hub_id(tmp_path, metadata, expected):
    import gguf

    from darwin_merge.io.gguf_import import gguf_hub_id

    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in metadata.items():
        writer.add_string(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_hub_id(path) == expected
