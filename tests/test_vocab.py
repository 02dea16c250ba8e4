"""Parents whose tokenizers differ by added tokens: union vocabulary, rows by token string.

Father: the tiny Llama with one added token (<f1>, id 100; 128 rows). Mother: a perturbed
copy with two other added tokens (<m1>, <m2> at 100, 101) and 130 rows. They agree on the
100 shared characters. A linear genome (merge_method_weight 0, every ratio 0.5) makes a
shared row exactly the mean of the parents' rows for the same token string.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from darwin_merge.cli import main
from darwin_merge.errors import IncompatibleModelsError
from darwin_merge.genome import Genome
from darwin_merge.merge import merge_models
from tiny_models import make_tiny, perturbed_copy, with_tokens

EMBED = "model.embed_tokens.weight"
LINEAR = Genome.uniform(0.5, density=1.0, merge_method_weight=0.0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab")
    father = make_tiny("llama", root / "father", seed=0)
    mother = perturbed_copy(father, root / "mother", scale=0.05)
    return with_tokens(father, ["<f1>"]), with_tokens(mother, ["<m1>", "<m2>"], rows=130)


def _vocab(folder):
    return json.loads((folder / "tokenizer.json").read_text())


def _ids(folder):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab(with_added_tokens=True)


def _rows(folder):
    return load_file(str(folder / "model.safetensors"))[EMBED]


def test_union_rows_are_the_merge_of_the_same_token_strings(pair, tmp_path):
    father, mother = pair
    child = merge_models(father, mother, tmp_path / "child", genome=LINEAR, progress=False)
    f_ids, m_ids, c_ids = _ids(father), _ids(mother), _ids(child)
    f_rows, m_rows, c_rows = _rows(father), _rows(mother), _rows(child)
    assert c_rows.shape[0] == json.loads((child / "config.json").read_text())["vocab_size"]
    shared = f_ids.keys() & m_ids.keys()
    assert len(shared) == 100
    for token in shared:
        expected = 0.5 * f_rows[f_ids[token]] + 0.5 * m_rows[m_ids[token]]
        assert torch.allclose(c_rows[c_ids[token]], expected, atol=1e-6), token
    assert torch.equal(c_rows[c_ids["<f1>"]], f_rows[f_ids["<f1>"]])
    for token in ("<m1>", "<m2>"):
        assert torch.equal(c_rows[c_ids[token]], m_rows[m_ids[token]])
    # the mother's tokens follow the father's last one (<m1> is 100 in the mother)
    assert (c_ids["<f1>"], c_ids["<m1>"], c_ids["<m2>"]) == (100, 101, 102)
    assert c_rows.shape[0] == 130


def test_union_child_loads_with_its_tokenizer(pair, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    father, mother = pair
    child = merge_models(father, mother, tmp_path / "child", progress=False)
    tokenizer = AutoTokenizer.from_pretrained(child)
    ids = tokenizer("a<m1>b<f1><m2>", add_special_tokens=False)["input_ids"]
    assert ids == [_ids(father)["a"], 101, _ids(father)["b"], 100, 102]
    model = AutoModelForCausalLM.from_pretrained(child)
    logits = model(input_ids=torch.tensor([ids])).logits
    assert logits.shape[-1] == 130 and bool(torch.isfinite(logits).all())
    report = json.loads((child / "darwin_merge.json").read_text())
    assert report["vocabulary"]["tokenizer_source"] == "union"
    assert report["vocabulary"]["mother_only_tokens"] == ["<m1>", "<m2>"]


@pytest.mark.parametrize("source,rows,absent", [("father", 128, "<m1>"),
                                                ("mother", 130, "<f1>")])
def test_one_parent_tokenizer(pair, tmp_path, source, rows, absent):
    father, mother = pair
    child = merge_models(father, mother, tmp_path / source, genome=LINEAR, progress=False,
                         tokenizer_source=source)
    c_ids = _ids(child)
    assert absent not in c_ids
    assert _vocab(child) == _vocab(father if source == "father" else mother)
    c_rows, f_rows, m_rows = _rows(child), _rows(father), _rows(mother)
    assert c_rows.shape[0] == rows
    assert torch.allclose(c_rows[c_ids["z"]], 0.5 * f_rows[c_ids["z"]] + 0.5 * m_rows[c_ids["z"]])


def test_disagreeing_tokenizers_are_refused_naming_tokens(pair, tmp_path):
    father, _ = pair
    swapped = make_tiny("llama", tmp_path / "swapped", seed=2)
    data = _vocab(swapped)
    vocab = data["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (swapped / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(IncompatibleModelsError, match=r"disagree on 2 shared token\(s\).*'a'"):
        merge_models(father, swapped, tmp_path / "child", progress=False)
    assert not (tmp_path / "child").exists()


def test_inspect_reports_vocabulary_difference(pair, capsys):
    father, mother = pair
    assert main(["inspect", str(father), str(mother), "--json"]) == 0
    comparison = json.loads(capsys.readouterr().out)["comparison"]
    assert comparison["mergeable"] is True
    assert comparison["vocab_rows_differ"] == [EMBED]
    assert comparison["vocabulary"]["only_first"] == ["<f1>"]
    assert comparison["vocabulary"]["only_second"] == ["<m1>", "<m2>"]
    assert main(["inspect", str(father), str(mother)]) == 0
    text = capsys.readouterr().out
    assert "can be merged" in text and "<m1>" in text


def test_cli_merge_tokenizer_source_and_card(pair, tmp_path, capsys):
    father, mother = pair
    child = tmp_path / "child"
    assert main(["merge", "--father", str(father), "--mother", str(mother), "--out", str(child),
                 "--tokenizer-source", "mother"]) == 0
    assert main(["card", str(child)]) == 0
    card = (child / "README.md").read_text()
    assert "Tokenizer: the mother's (`--tokenizer-source mother`)" in card
    assert main(["merge", "--father", str(father), "--mother", str(mother), "--out",
                 str(tmp_path / "bad"), "--tokenizer-source", "both"]) == 2


def test_search_refuses_different_vocabularies(pair):
    from darwin_merge.merge.engine import ParentTensors

    father, mother = pair
    with pytest.raises(IncompatibleModelsError, match="different vocabularies"):
        ParentTensors.load(father, mother)
