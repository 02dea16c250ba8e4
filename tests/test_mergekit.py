"""mergekit interop: configs run by darwin against hand-computed references, the export
of a darwin genome, and one-line errors for configs darwin does not run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from darwin_merge.cli import main
from darwin_merge.errors import UsageError
from darwin_merge.mergekit import merge_from_config
from darwin_merge.mergekit.config import config_from_dict, evaluate
from tiny_models import make_tiny, perturbed_copy

NUM_LAYERS = 4  # tiny_models' default depth


@pytest.fixture(scope="module")
def trio(tiny_trio) -> tuple[Path, Path, Path]:
    """(base, a, b): a tiny Llama and two fine-tunes of it (tests/conftest.py)."""
    return tiny_trio


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[2]) if parts[1] == "layers" else None


def test_linear_config_matches_hand_computed(trio, tmp_path):
    base, a, b = trio
    config = write_config(tmp_path / "linear.yml", {
        "merge_method": "linear",
        "models": [
            {"model": str(a), "parameters": {"weight": 0.3}},
            {"model": str(b), "parameters": {"weight": [
                {"filter": "self_attn", "value": [0.1, 0.9]},  # a gradient over the layers
                {"value": 0.7}]}},
        ],
        "dtype": "float32",
    })
    child = weights_of(merge_from_config(config, tmp_path / "child", progress=False))
    wa, wb = weights_of(a), weights_of(b)
    assert set(child) == set(wa)
    for name, tensor in child.items():
        layer = layer_of(name)
        if "self_attn" in name:  # t = layer / (L - 1), interpolated from 0.1 to 0.9
            weight_b = 0.1 + 0.8 * layer / (NUM_LAYERS - 1)
        else:
            weight_b = 0.7
        expected = (0.3 * wa[name] + weight_b * wb[name]) / (0.3 + weight_b)
        torch.testing.assert_close(tensor, expected, rtol=1e-6, atol=1e-7)
    attn = "model.layers.1.self_attn.q_proj.weight"
    assert not torch.allclose(child[attn], (0.3 * wa[attn] + 0.7 * wb[attn]) / 1.0)


def trimmed(delta: torch.Tensor, density: float) -> torch.Tensor:
    """TIES's trim by hand: the int(density * n) largest magnitudes survive."""
    k = int(density * delta.numel())
    threshold = delta.abs().flatten().kthvalue(delta.numel() - k + 1).values
    return torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta))


def test_ties_config_matches_hand_computed(trio, tmp_path):
    base, a, b = trio
    config = write_config(tmp_path / "ties.yml", {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [{"model": str(a), "parameters": {"weight": 1.0, "density": 0.5}},
                   {"model": str(b), "parameters": {"weight": 0.5, "density": 0.7}}],
    })
    child = weights_of(merge_from_config(config, tmp_path / "child", progress=False))
    w, wa, wb = weights_of(base), weights_of(a), weights_of(b)
    for name, tensor in child.items():
        da = trimmed(wa[name] - w[name], 0.5) * 1.0
        db = trimmed(wb[name] - w[name], 0.7) * 0.5
        sign = torch.where(da + db >= 0, 1.0, -1.0)  # the elected sign of the sum
        keep_a, keep_b = torch.sign(da) == sign, torch.sign(db) == sign
        mixed = da * keep_a + db * keep_b
        divisor = 1.0 * keep_a + 0.5 * keep_b  # normalize: TIES's default
        expected = w[name] + mixed / torch.where(divisor == 0, 1.0, divisor)
        torch.testing.assert_close(tensor, expected, rtol=1e-5, atol=1e-6)
    name = "model.layers.0.mlp.up_proj.weight"
    unchanged = (child[name] == w[name]).float().mean().item()
    assert 0.1 < unchanged < 0.5  # about (1 - 0.5)(1 - 0.7) of the entries keep the base


def test_task_arithmetic_with_lambda_and_negative_weight(trio, tmp_path):
    base, a, b = trio
    config = write_config(tmp_path / "ta.yml", {
        "merge_method": "task_arithmetic", "base_model": str(base),
        "models": [{"model": str(a), "parameters": {"weight": 0.8}},
                   {"model": str(b), "parameters": {"weight": -0.4}}],
        "parameters": {"lambda": 0.5},
    })
    child = weights_of(merge_from_config(config, tmp_path / "child", progress=False))
    w, wa, wb = weights_of(base), weights_of(a), weights_of(b)
    for name, tensor in child.items():
        expected = w[name] + 0.5 * (0.8 * (wa[name] - w[name]) - 0.4 * (wb[name] - w[name]))
        torch.testing.assert_close(tensor, expected, rtol=1e-5, atol=1e-6)


def test_dare_ties_is_seeded_by_the_config(trio, tmp_path):
    base, a, b = trio
    config = {"merge_method": "dare_ties", "base_model": str(base),
              "models": [{"model": str(a), "parameters": {"weight": 0.5, "density": 0.4}},
                         {"model": str(b), "parameters": {"weight": 0.5, "density": 0.4}}]}
    first = weights_of(merge_from_config(write_config(tmp_path / "d.yml", config),
                                         tmp_path / "one", progress=False))
    again = weights_of(merge_from_config(tmp_path / "d.yml", tmp_path / "two", progress=False))
    assert all(torch.equal(first[n], again[n]) for n in first)
    name = "model.layers.2.mlp.down_proj.weight"
    kept_base = (first[name] == weights_of(base)[name]).float().mean().item()
    assert 0.25 < kept_base < 0.45  # both dropped: (1 - 0.4)^2 = 0.36 of the entries


# -- export -----------------------------------------------------------------------------
LINEAR_GENOME = {"global_ratio": 0.4, "attn_ratio": 0.3, "ffn_ratio": 0.6, "embed_ratio": 0.1,
                 "block_1_ratio": 0.7, "block_4_ratio": 1.0, "merge_method_weight": 0.0,
                 "genome_rule": "v2"}


def darwin_child(trio, tmp_path, genome: dict, base: bool = False) -> Path:
    folder, a, b = trio
    genome_file = write_config(tmp_path / "genome.yaml", genome)
    args = ["merge", "--father", str(a), "--mother", str(b), "--genome", str(genome_file),
            "--out", str(tmp_path / "darwin-child")]
    assert main(args + (["--base", str(folder)] if base else [])) == 0
    return tmp_path / "darwin-child"


def test_export_of_a_linear_genome_round_trips(trio, tmp_path, capsys):
    child = darwin_child(trio, tmp_path, LINEAR_GENOME)
    exported = tmp_path / "exported.yml"
    assert main(["export-mergekit", str(child), "--out", str(exported)]) == 0
    text = exported.read_text()
    config = yaml.safe_load(text)
    assert config["merge_method"] == "linear"
    mother_weight = config["models"][1]["parameters"]["weight"]
    attn = next(c for c in mother_weight if c.get("filter") == "self_attn")["value"]
    # v2 per layer (blocks 0, 1, 3, 4 of 4 layers): attn + block - global, clipped;
    # layer 3's 0.9 is in the transplant zone (> 0.85), so the mother's tensor (weight 1)
    assert attn == [0.4, 0.6, 0.4, 1.0]
    assert "38 of 38 float tensors get darwin's exact ratio" in text
    assert text.startswith("# mergekit config exported by darwin") and "APPROXIMATE" in text
    assert main(["merge", "--mergekit-config", str(exported), "--out",
                 str(tmp_path / "mk-child")]) == 0
    ours, theirs = weights_of(child), weights_of(tmp_path / "mk-child")
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)
    assert (tmp_path / "mk-child" / "mergekit_config.yml").read_text() == text


def test_export_round_trips_on_gemma4_moe(tmp_path, capsys):
    """Towers and per-layer embeddings outside the layers, q_norm inside self_attn,
    per-layer inputs and experts inside the layers, clipping bounds of the audio tower."""
    father = make_tiny("gemma4_moe", tmp_path / "father")
    mother = perturbed_copy(father, tmp_path / "mother", scale=0.3)
    child = darwin_child((None, father, mother), tmp_path, LINEAR_GENOME)
    exported = tmp_path / "exported.yml"
    assert main(["export-mergekit", str(child), "--out", str(exported)]) == 0
    text = exported.read_text()
    assert "260 of 260 float tensors get darwin's exact ratio" in text
    assert "clipping bounds (*_min/*_max)" in text
    filters = [c.get("filter") for c in yaml.safe_load(text)["models"][1]["parameters"]["weight"]]
    assert filters[-7:] == ["per_layer", "norm", "self_attn", "mlp", "experts", "router", None]
    assert "model.vision_tower." in filters
    assert main(["merge", "--mergekit-config", str(exported), "--out",
                 str(tmp_path / "mk-child")]) == 0
    ours, theirs = weights_of(child), weights_of(tmp_path / "mk-child")
    assert set(ours) == set(theirs) and all(torch.equal(ours[n], theirs[n]) for n in ours)


def test_export_of_a_blended_genome_says_what_is_lost(trio, tmp_path, capsys):
    genome = {**LINEAR_GENOME, "merge_method_weight": 0.7, "density_a": 0.8, "density_b": 0.6}
    child = darwin_child(trio, tmp_path, genome, base=True)
    capsys.readouterr()
    assert main(["export-mergekit", str(child / "darwin_merge.json")]) == 0
    text = capsys.readouterr().out
    config = yaml.safe_load(text)
    assert config["merge_method"] == "dare_ties" and config["base_model"] == str(trio[0])
    assert [m["parameters"]["density"] for m in config["models"]] == [0.8, 0.6]
    assert "merge_method_weight 0.7 blends DARE-TIES with linear" in text
    assert "DARE's masks" in text
    father_weight = config["models"][0]["parameters"]["weight"]
    assert next(c for c in father_weight if c.get("filter") == "mlp")["value"] == \
        [round(1 - v, 6) for v in next(c for c in config["models"][1]["parameters"]["weight"]
                                       if c.get("filter") == "mlp")["value"]]


def test_export_of_a_bare_genome_needs_the_parents(trio, tmp_path, capsys):
    genome_file = write_config(tmp_path / "g.yaml", LINEAR_GENOME)
    assert main(["export-mergekit", str(genome_file)]) == 2
    assert "give --father and --mother" in capsys.readouterr().err
    _, a, b = trio
    assert main(["export-mergekit", str(genome_file), "--father", str(a), "--mother",
                 str(b)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["models"][0]["model"] == str(a)
    assert main(["export-mergekit", str(genome_file), "--father", str(tmp_path / "gone"),
                 "--mother", str(b)]) == 2
    assert "the father's folder is not there (give --father FOLDER)" in capsys.readouterr().err
    assert main(["export-mergekit", str(tmp_path)]) == 2
    assert "no darwin_merge.json in it or in child/" in capsys.readouterr().err


# -- configs darwin refuses -------------------------------------------------------------
BAD_CONFIGS = [
    ({"merge_method": "slerp"}, "merge_method: Input should be 'linear'"),
    ({"merge_method": "linear", "models": [{"model": "A"}], "modules": {}},
     "modules: multi-module merges not supported"),
    ({"merge_method": "ties", "models": [{"model": "A", "parameters": {"weight": 1}}]},
     "ties needs a base_model"),
    ({"merge_method": "ties", "base_model": "W",
      "models": [{"model": "A", "parameters": {"weight": 1, "density": 1.5}}]},
     "models.0.parameters.density: 1.5 is outside [0, 1]"),
    ({"merge_method": "linear", "models": [{"model": "A", "parameters": {"epsilon": 0.1}}]},
     "models.0.parameters.epsilon: not a parameter of linear"),
    ({"merge_method": "linear", "slices": [{"sources": [{"model": "A", "layer_range": [0, 2]}]},
                                           {"sources": [{"model": "A", "layer_range": [2, 4]}]}]},
     "2 output slices; darwin runs one whole-model slice only"),
    ({"merge_method": "linear", "models": [{"model": "A", "parameters": {"weight": "x"}}]},
     "models.0.parameters.weight: must be a number, a list of numbers"),
    ({"merge_method": "linear", "models": [{"model": "A"}], "foo": 1}, "foo: unknown key"),
    ({"merge_method": "linear", "models": [{"model": "A", "parameters": {"weight": [
        {"filter": "mlp", "value": []}]}}]},
     "models.0.parameters.weight: an empty list gives no value"),
]


@pytest.mark.parametrize(("config", "message"), BAD_CONFIGS)
def test_bad_config_is_one_line_usage_error(config, message, tmp_path, capsys):
    path = write_config(tmp_path / "bad.yml", config)
    assert main(["merge", "--mergekit-config", str(path), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err.replace("\n", " ") and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def test_partial_slice_and_missing_weight_are_refused(trio, tmp_path, capsys):
    _, a, b = trio
    partial = write_config(tmp_path / "p.yml", {"merge_method": "linear", "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 2], "parameters": {"weight": 1}},
                     {"model": str(b), "layer_range": [0, 2], "parameters": {"weight": 1}}]}]})
    assert main(["merge", "--mergekit-config", str(partial), "--out", str(tmp_path / "c")]) == 2
    assert "layer_range [0, 2] is not the whole model ([0, 4])" in capsys.readouterr().err
    no_weight = write_config(tmp_path / "w.yml", {"merge_method": "linear", "models": [
        {"model": str(a), "parameters": {"weight": [{"filter": "mlp", "value": 1}]}},
        {"model": str(b), "parameters": {"weight": 1}}]})
    assert main(["merge", "--mergekit-config", str(no_weight), "--out", str(tmp_path / "c")]) == 2
    assert "has no weight for tensor" in capsys.readouterr().err
    union = write_config(tmp_path / "u.yml", {"merge_method": "linear", "tokenizer_source":
                                              "union", "models": [
        {"model": str(a), "parameters": {"weight": 1}}]})
    assert main(["merge", "--mergekit-config", str(union), "--out", str(tmp_path / "c")]) == 2
    assert "tokenizer_source 'union': darwin keeps one model's tokenizer" in \
        capsys.readouterr().err.replace("\n", " ")
    hub = write_config(tmp_path / "h.yml", {"merge_method": "linear", "models": [
        {"model": "org/not-here", "parameters": {"weight": 1}}]})
    assert main(["merge", "--mergekit-config", str(hub), "--out", str(tmp_path / "c")]) == 3
    assert "no folder org/not-here, and no cached Hub model org/not-here" in \
        capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_genome_options_do_not_mix_with_a_config(trio, tmp_path, capsys):
    path = write_config(tmp_path / "x.yml", {"merge_method": "linear", "models": [
        {"model": str(trio[1]), "parameters": {"weight": 1}}]})
    assert main(["merge", "--mergekit-config", str(path), "--father", str(trio[1]),
                 "--out", str(tmp_path / "c")]) == 2
    assert "--father: not used with --mergekit-config" in capsys.readouterr().err


@pytest.mark.parametrize("rescale", [True, False])
def test_dare_rescale_option(trio, tmp_path, rescale):
    base, a, _ = trio
    config = write_config(tmp_path / "r.yml", {
        "merge_method": "dare_ties", "base_model": str(base),
        "models": [{"model": str(a), "parameters": {"weight": 0.5, "density": 0.25}}],
        "parameters": {"rescale": rescale}})
    child = weights_of(merge_from_config(config, tmp_path / "c", progress=False))
    name = "model.layers.1.self_attn.o_proj.weight"
    w, delta = weights_of(base)[name], weights_of(a)[name] - weights_of(base)[name]
    kept = child[name] != w
    scale = 0.5 / 0.25 if rescale else 0.5
    torch.testing.assert_close(child[name][kept], (w + scale * delta)[kept])
    assert 0.2 < kept.float().mean().item() < 0.3


# -- fuzzing ----------------------------------------------------------------------------
NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                   st.integers(min_value=-10**30, max_value=10**30))
SHARE = st.floats(min_value=0.0, max_value=1.0)
GOOD_VALUE = st.one_of(SHARE, st.lists(SHARE, min_size=1, max_size=4), st.lists(
    st.fixed_dictionaries({"value": st.one_of(SHARE, st.lists(SHARE, min_size=1, max_size=3))},
                          optional={"filter": st.sampled_from(["mlp", "self_attn", "*"])}),
    min_size=1, max_size=3))
VALUE = st.one_of(GOOD_VALUE, NUMBER, st.text(max_size=4), st.none(),
                  st.lists(NUMBER, max_size=3),
                  st.lists(st.fixed_dictionaries({"value": NUMBER},
                                                 optional={"filter": st.text(max_size=4)}),
                           max_size=2))
NAMES = st.sampled_from(["weight", "density", "lambda"])
PARAMETERS = st.one_of(st.dictionaries(NAMES, GOOD_VALUE, min_size=1, max_size=2), st.dictionaries(
    st.one_of(NAMES, st.sampled_from(["normalize", "rescale", "int8_mask", "epsilon"]),
              st.text(max_size=5)), VALUE, max_size=3))
MODEL = st.fixed_dictionaries({"model": st.text(max_size=5)},
                              optional={"parameters": st.one_of(PARAMETERS, PARAMETERS, VALUE)})
METHOD = st.sampled_from(["linear", "ties", "dare_ties", "task_arithmetic"])
PLAUSIBLE = st.fixed_dictionaries(
    {"merge_method": METHOD, "models": st.lists(MODEL, min_size=1, max_size=3),
     "base_model": st.text(max_size=4)},
    optional={"parameters": PARAMETERS, "dtype": st.sampled_from(["float32", "bfloat16"])})
BROKEN = st.fixed_dictionaries({}, optional={
    "merge_method": st.one_of(METHOD, st.just("slerp"), st.integers()),
    "models": st.one_of(st.lists(MODEL, max_size=3), VALUE),
    "slices": st.lists(st.fixed_dictionaries({"sources": st.lists(st.fixed_dictionaries(
        {"model": st.text(max_size=3), "layer_range": st.lists(st.integers(0, 5), max_size=3)}),
        max_size=2)}), max_size=2),
    "base_model": st.one_of(st.text(max_size=4), st.none(), st.integers()),
    "parameters": PARAMETERS, "dtype": st.one_of(st.sampled_from(["float32", "int4"]), VALUE),
    "modules": st.none(), "tokenizer_source": VALUE, "extra": VALUE})
CONFIG = st.one_of(PLAUSIBLE, BROKEN)


@settings(max_examples=150, deadline=None)
@given(CONFIG)
def test_config_from_random_mappings_is_valid_or_a_usage_error(data):
    try:
        config = config_from_dict(data)
    except UsageError as exc:
        assert "\n" not in str(exc) and str(exc).strip()
        return
    assert config.merge_method in ("linear", "ties", "dare_ties", "task_arithmetic")
    assert (config.models is None) != (config.slices is None)
    for entry in config.models or []:
        for value in _leaves((entry.parameters or {}).get("density")):
            assert 0.0 <= value <= 1.0
        for value in _leaves((entry.parameters or {}).get("weight")):
            assert not isinstance(value, bool) and abs(value) < float("inf")
        for setting in (entry.parameters or {}).values():  # every setting evaluates
            for t in (0.0, 0.37, 1.0):
                value = evaluate(setting, "model.layers.1.mlp.up_proj.weight", t)
                assert value is None or isinstance(value, int | float)


def _leaves(setting):
    if setting is None:
        return
    if isinstance(setting, list):
        for entry in setting:
            yield from _leaves(getattr(entry, "value", entry))
    else:
        yield setting


@pytest.mark.parametrize("rule", ["v1", "v2"])
def test_export_gives_every_tensor_its_ratio_on_every_family(tiny_model, tmp_path, capsys, rule):
    _, folder = tiny_model
    values = {**LINEAR_GENOME, "block_3_ratio": 0.2, "merge_method_weight": 0.9}
    if rule == "v1":  # a genome file without the key is read under v1, the first rule
        del values["genome_rule"]
    genome = write_config(tmp_path / "g.yaml", values)
    assert main(["export-mergekit", str(genome), "--father", str(folder), "--mother",
                 str(folder)]) == 0
    text = capsys.readouterr().out
    assert f"# genome_rule {rule}," in text
    header = [line for line in text.splitlines() if "float tensors" in line]
    counted, total = re.match(r"# (\d+) of (\d+) float tensors", header[0]).groups()
    assert counted == total and int(total) > 30
