"""Untrusted model folders: lying safetensors headers, escaping paths, pickles, remote code.

Property-based (hypothesis) tests feed random bytes and random headers to the header
reader: it may only ever answer with Darwin's own ModelFormatError.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from darwin_merge.errors import ModelFormatError
from darwin_merge.io import ModelSource
from darwin_merge.io.safetensors_header import DTYPE_SIZES, parse_header, read_header


def _raw_file(path: Path, header: dict | bytes, data: bytes = b"", length: int | None = None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


def _model_folder(tmp_path: Path, name: str = "m") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama",
                                                    "num_hidden_layers": 1}))
    return folder


@pytest.mark.parametrize("header,data,length,match", [
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, None,
     "outside the file"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None,
     "overlaps"),
    ({"w": {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 4]}}, b"\0" * 4, None,
     "does not match"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, 10**12,
     "claims"),
    ({"w": {"dtype": "XYZ", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, None,
     "unknown dtype"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, None,
     "bad shape"),
])
def test_lying_headers_refused(tmp_path, header, data, length, match):
    path = _raw_file(tmp_path / "x.safetensors", header, data, length)
    with pytest.raises(ModelFormatError, match=match) as err:
        read_header(path)
    assert str(path) in str(err.value)


def test_valid_file_accepted(tmp_path):
    path = tmp_path / "ok.safetensors"
    save_file({"a": torch.ones(3), "b": torch.zeros(2, 2)}, str(path))
    entries, _ = read_header(path)
    assert {e.name for e in entries} == {"a", "b"}


def assert_consistent(entries, data_size: int) -> None:
    """What an accepted header promises: every tensor's bytes inside the data area, no
    two overlapping, each exactly shape x dtype size long."""
    ends = sorted((e.begin, e.end) for e in entries)
    assert all(0 <= b <= e <= data_size for b, e in ends)
    assert all(ends[i][1] <= ends[i + 1][0] for i in range(len(ends) - 1))
    for entry in entries:
        assert entry.end - entry.begin == math.prod(entry.shape) * DTYPE_SIZES[entry.dtype]


# random bytes, and random bytes spliced into a valid header (so that some are accepted)
_VALID = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512) | st.builds(
    lambda i, junk: _VALID[:i] + junk + _VALID[i:], st.integers(0, len(_VALID)),
    st.binary(max_size=4)), st.integers(0, 64))
def test_random_bytes_never_crash(raw, data_size):
    try:
        entries, _ = parse_header(raw, data_size=data_size, where="fuzz")
    except ModelFormatError:
        return
    assert_consistent(entries, data_size)


def test_the_fuzzed_valid_header_is_accepted():
    """The seed the fuzz splices into is accepted, so the accepted branch is reached."""
    entries, _ = parse_header(_VALID, data_size=8, where="fuzz")
    assert [(e.name, e.shape, e.begin, e.end) for e in entries] == [("w", (2,), 0, 8)]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                       children, max_size=4),
    max_leaves=12,
)
_entries = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "BF16", "I8", "F64", "nope", 3]) | _json_values,
    "shape": st.lists(st.integers(-3, 2**40), max_size=10) | _json_values,
    "data_offsets": st.lists(st.integers(-5, 2**62), max_size=3) | _json_values,
})


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _entries | _json_values, max_size=5),
       st.integers(0, 4096))
@example({"": {"dtype": []}}, 0)  # found by hypothesis: an unhashable dtype was a TypeError
def test_random_headers_never_crash(header, data_size):
    raw = json.dumps(header).encode()
    try:
        entries, _ = parse_header(raw, data_size=data_size, where="fuzz")
    except ModelFormatError:
        return
    assert_consistent(entries, data_size)


@pytest.mark.parametrize("target", ["../outside.safetensors", "/etc/passwd", ""])
def test_index_escaping_folder_refused(tmp_path, target):
    folder = _model_folder(tmp_path)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": target}}))
    with pytest.raises(ModelFormatError, match="outside the model folder"):
        ModelSource(folder)


def test_symlink_out_of_folder_refused(tmp_path):
    outside = tmp_path / "outside.safetensors"
    save_file({"w": torch.ones(2)}, str(outside))
    folder = _model_folder(tmp_path)
    os.symlink(outside, folder / "model.safetensors")
    with pytest.raises(ModelFormatError, match="outside the model folder"):
        ModelSource(folder)


def test_pickle_refused_unless_opted_in_then_weights_only(tmp_path):
    folder = _model_folder(tmp_path)
    torch.save({"w": torch.arange(3.0)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelFormatError, match="does not unpickle"):
        ModelSource(folder)
    with ModelSource(folder, allow_pickle=True) as source:
        assert source.get("w").tolist() == [0.0, 1.0, 2.0]


def test_malicious_pickle_not_executed_even_when_opted_in(tmp_path):
    folder = _model_folder(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"w": Evil()}, handle)
    with pytest.raises(ModelFormatError, match="cannot load safely"):
        ModelSource(folder, allow_pickle=True)
    assert not marker.exists()


def test_remote_code_refused_unless_trusted(tmp_path):
    folder = _model_folder(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "modeling_evil.py").write_text("raise SystemExit('executed!')\n")
    save_file({"w": torch.ones(2)}, str(folder / "model.safetensors"))
    with pytest.raises(ModelFormatError, match="remote code"):
        ModelSource(folder)
    with ModelSource(folder, trust_remote_code=True) as source:
        assert source.names == ["w"]


@pytest.mark.parametrize("case", ["stray_code", "tokenizer_auto_map"])
def test_tokenizer_folder_with_code_refused(tmp_path, case):
    folder = _model_folder(tmp_path)
    save_file({"w": torch.ones(2)}, str(folder / "model.safetensors"))
    if case == "stray_code":
        (folder / "tokenization_evil.py").write_text("import os\n")
    else:
        (folder / "tokenizer_config.json").write_text(
            json.dumps({"auto_map": {"AutoTokenizer": ["tok_evil.Tok", None]}}))
    with pytest.raises(ModelFormatError, match="code"):
        ModelSource(folder)


def test_code_files_never_copied_to_child(tmp_path):
    from darwin_merge.io.writer import copy_side_files

    folder = _model_folder(tmp_path)
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenization_evil.py").write_text("import os\n")
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    out = tmp_path / "child"
    out.mkdir()
    copied = copy_side_files(folder, out)
    assert sorted(copied) == ["chat_template.jinja", "tokenizer.json"]
    assert not (out / "tokenization_evil.py").exists()
