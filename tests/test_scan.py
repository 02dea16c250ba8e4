"""The Model Diagnostic Scan: static stats, cached layer skip, ratios, scan.json, CLI errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from darwin_merge.cli import main
from darwin_merge.errors import NumericalError, UsageError
from darwin_merge.records import record_json
from darwin_merge.scan import (
    combined_score,
    layer_skip_distances,
    load_scan,
    mri_ratio,
    run_scan,
    static_score,
    summary_lines,
    tensor_stats,
)
from darwin_merge.scan.probes import load_probes, normalise_weights, parse_weights, probe_scores
from darwin_merge.scan.ratios import tensor_probe_score, transplant_counts
from tiny_models import build_model, make_tiny, make_tiny_pair, perturbed_copy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_probes(tmp_path_factory):
    """Two short probe sets: enough to exercise everything, cheap on the real model."""
    folder = tmp_path_factory.mktemp("probes")
    (folder / "math.jsonl").write_text('{"text": "2 + 2 = 4"}\n{"text": "3 * 3 = 9"}\n')
    (folder / "code.jsonl").write_text('{"text": "def f(x):\\n    return x"}\n')
    return folder


# -- static profile ---------------------------------------------------------

def test_constant_tensor_has_zero_entropy_and_std():
    stats = tensor_stats(torch.full((7, 5), 3.0))
    assert stats["entropy"] == 0.0
    assert stats["std"] == 0.0
    assert stats["norm"] == pytest.approx(math.sqrt(35 * 9.0))
    assert stats["static"] == pytest.approx(min(stats["norm"], 100) * 0.002)


def test_uniform_tensor_reaches_maximum_entropy():
    stats = tensor_stats(torch.arange(256 * 3, dtype=torch.float32), bins=256)
    assert stats["entropy"] == pytest.approx(8.0)
    assert tensor_stats(torch.arange(16.0), bins=16)["entropy"] == pytest.approx(4.0)


def test_small_tensor_against_hand_computed_values():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    stats = tensor_stats(values)
    # four evenly spread values land in four distinct bins of 256: 2 bits
    assert stats["entropy"] == pytest.approx(2.0)
    assert stats["std"] == pytest.approx(math.sqrt(1.25))  # population std
    assert stats["norm"] == pytest.approx(math.sqrt(30.0))
    expected = 2.0 * 0.3 + math.sqrt(1.25) * 0.2 + math.sqrt(30.0) * 0.002
    assert stats["static"] == pytest.approx(expected)
    assert static_score(1.0, 2.0, 500.0) == pytest.approx(0.3 + 0.4 + 0.2)  # norm capped
    assert torch.equal(values, torch.tensor([1.0, 2.0, 3.0, 4.0]))  # input untouched


def test_two_value_histogram_and_bfloat16():
    stats = tensor_stats(torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.bfloat16))
    assert stats["entropy"] == pytest.approx(1.0)
    assert stats["std"] == pytest.approx(0.5)


def test_large_tensor_sampling_is_seeded_and_recorded():
    tensor = torch.randn(300, 200, generator=torch.Generator().manual_seed(3))
    a = tensor_stats(tensor, max_elements=1000, seed=7)
    b = tensor_stats(tensor, max_elements=1000, seed=7)
    c = tensor_stats(tensor, max_elements=1000, seed=8)
    full = tensor_stats(tensor)
    assert a == b and a["sampled"] and not full["sampled"]
    assert a["entropy"] != c["entropy"]
    assert a["std"] == full["std"] and a["norm"] == full["norm"]  # only the histogram samples
    assert abs(a["entropy"] - full["entropy"]) < 1.0


def test_non_finite_values():
    with pytest.raises(NumericalError):
        tensor_stats(torch.tensor([1.0, float("nan")]))
    with pytest.raises(NumericalError):
        tensor_stats(torch.tensor([1.0, float("inf")]))
    bound = tensor_stats(torch.tensor([float("-inf"), 2.0, 4.0]), allow_inf=True)
    assert bound["infinite"] == 1 and bound["std"] == pytest.approx(1.0)
    with pytest.raises(NumericalError):
        tensor_stats(torch.tensor([float("nan")]), allow_inf=True)


# -- layer skip -------------------------------------------------------------

def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 100, (3, 14), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # a padded prompt
    ids[1, 9:] = 0
    return ids, mask


@pytest.mark.parametrize("family", ["llama", "gemma3", "gemma4", "gemma4_moe"])
def test_cached_skip_equals_naive(family):
    model = build_model(family, seed=1)
    ids, mask = _batch()
    cached = layer_skip_distances(model, ids, mask, "cached")
    naive = layer_skip_distances(model, ids, mask, "naive")
    assert cached.shape == (4, 3)
    assert torch.allclose(cached, naive, atol=1e-5, rtol=1e-4)
    assert (cached > 1e-4).all()  # every random layer matters a little


def test_padding_does_not_change_a_prompt_distance():
    model = build_model("llama", seed=1)
    ids, mask = _batch()
    alone = layer_skip_distances(model, ids[1:2, :9], mask[1:2, :9])
    batched = layer_skip_distances(model, ids, mask)
    assert torch.allclose(alone[:, 0], batched[:, 1], atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_layer_with_zeroed_outputs_has_zero_distance(family):
    model = build_model(family, seed=2)
    with torch.no_grad():
        layer = model.model.layers[1]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    distances = layer_skip_distances(model, *_batch()).mean(dim=1)
    assert distances[1] < 1e-6
    assert (distances[[0, 2, 3]] > 1e-3).all()


def test_layer_made_to_matter_has_large_distance():
    model = build_model("llama", seed=2)
    ids, mask = _batch()
    before = layer_skip_distances(model, ids, mask).mean(dim=1)
    with torch.no_grad():
        model.model.layers[2].mlp.down_proj.weight.mul_(40.0)
    after = layer_skip_distances(model, ids, mask).mean(dim=1)
    assert after[2] > 0.5
    assert after[2] > 3 * before[2]
    assert after[2] == after.max()


# -- ratios -----------------------------------------------------------------

def test_ratio_formulas():
    assert combined_score(1.0, 2.0) == pytest.approx(0.4 + 1.2)
    assert mri_ratio(1.0, 3.0) == pytest.approx(0.75)
    assert mri_ratio(2.0, 2.0) == 0.5
    assert mri_ratio(0.0, 0.0) == 0.5
    assert mri_ratio(0.0, 1.0) == 1.0
    assert tensor_probe_score(1, [0.1, 0.3, 0.5]) == 0.3
    assert tensor_probe_score(None, [0.1, 0.3, 0.5]) == pytest.approx(0.3)
    counts = transplant_counts({"a": 0.1, "b": 0.5, "c": 0.9, "d": 0.15})
    assert counts == {"father": 1, "mother": 1, "blended": 2}


def test_probe_scores_and_weights():
    profile = {"MATH": [0.2, 0.4], "CODE": [0.0, 1.0]}
    assert probe_scores(profile, normalise_weights(["MATH", "CODE"], None)) == \
        pytest.approx([0.1, 0.7])
    weights = normalise_weights(["MATH", "CODE"], parse_weights("math=3,CODE=1"))
    assert weights == pytest.approx({"MATH": 0.75, "CODE": 0.25})
    assert probe_scores(profile, weights) == pytest.approx([0.15, 0.55])
    with pytest.raises(UsageError):
        normalise_weights(["MATH"], {"CODE": 1.0})
    with pytest.raises(UsageError):
        parse_weights("MATH:2")


def test_shipped_probe_sets():
    probes = load_probes()
    assert list(probes) == ["REASONING", "CODE", "MATH", "KNOWLEDGE", "LANGUAGE"]
    assert all(len(texts) >= 24 and len(set(texts)) == len(texts) for texts in probes.values())


# -- the whole scan ---------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    return make_tiny_pair(tmp_path_factory.mktemp("scanpair"), scale=0.3, mother_seed=4)


def test_identical_parents_give_half_everywhere(tiny_llama, tmp_path, small_probes):
    scan = run_scan(tiny_llama, tiny_llama, tmp_path / "scan", probes=small_probes,
                    progress=False)
    assert set(scan.mri_ratios().values()) == {0.5}
    assert scan.layers["father"] == scan.layers["mother"]


def assert_ratios_lean_to_the_stronger_parent(tensors: dict) -> None:
    """Each tensor's card ratio (the mother's share by the card's formula, `mri_ratio` of a
    card scan, `card_ratio` beside an attribution's) is above 0.5 exactly where the mother's
    combined score is the larger, from finite scores (a clamp cannot make this true)."""
    for name, t in tensors.items():
        a, b = t["combined_a"], t["combined_b"]
        ratio = t["card_ratio"] if "card_ratio" in t else t["mri_ratio"]
        assert math.isfinite(a) and math.isfinite(b), name
        assert (ratio > 0.5, ratio < 0.5) == (b > a, b < a), (name, a, b, ratio)


def test_scan_file_schema_and_determinism(tiny_pair, tmp_path, small_probes):
    father, mother = tiny_pair
    scan = run_scan(father, mother, tmp_path / "one", probes=small_probes, max_tokens=12,
                    progress=False)
    run_scan(father, mother, tmp_path / "two", probes=small_probes, max_tokens=12,
             progress=False)
    one = (tmp_path / "one" / "scan.json").read_bytes()
    assert one == (tmp_path / "two" / "scan.json").read_bytes()
    loaded = load_scan(tmp_path / "one")
    assert record_json(loaded) == json.loads(one) and loaded == scan
    ratios = loaded.mri_ratios()
    assert len(ratios) == 38
    assert_ratios_lean_to_the_stronger_parent(loaded.tensors)
    assert len(set(ratios.values())) > 1  # different parents: not all 0.5
    entry = loaded.tensors["model.layers.2.mlp.down_proj.weight"]
    for key in ("entropy_a", "std_a", "norm_a", "static_a", "entropy_b", "std_b", "norm_b",
                "static_b", "combined_a", "combined_b", "mri_ratio"):
        assert isinstance(entry[key], float)
    assert (entry["component"], entry["layer"]) == ("ffn", 2)
    score_b = loaded.layers["mother"][2].probe_score
    assert entry["combined_b"] == pytest.approx(entry["static_b"] * 0.4 + score_b * 0.6)
    assert loaded.formula == "attribution"  # the default; the card's ratio stays beside it
    assert entry["card_ratio"] == pytest.approx(
        entry["combined_b"] / (entry["combined_a"] + entry["combined_b"]))
    row = loaded.layers["father"][1]
    assert set(row.distances) == {"MATH", "CODE"}
    assert row.probe_score == pytest.approx(sum(row.distances.values()) / 2)
    assert loaded.probe_sets == {"CODE": 1, "MATH": 2}
    assert len(loaded.probes_sha256) == 64
    lines = summary_lines(loaded)
    assert lines[0].startswith("father:") and "MATH" in lines[0] and "CODE" in lines[1]
    counts = loaded.transplant
    assert f"{counts.mother} > 0.85" in lines[-1]
    assert counts.father + counts.mother + counts.blended == 38
    for picture in ("mds_father_mother.png", "mri_ratio.png"):
        assert (tmp_path / "one" / picture).read_bytes()[:8] == PNG_MAGIC


def test_gemma4_scan_covers_towers_and_clipping_buffers(tmp_path, small_probes):
    father = make_tiny("gemma4", tmp_path / "father", seed=0)
    mother = perturbed_copy(father, tmp_path / "mother", scale=0.3, seed=5)
    scan = run_scan(father, mother, tmp_path / "scan", probes=small_probes, max_tokens=8,
                    progress=False)
    tensors = scan.tensors
    assert len(tensors) == 228 and scan.num_layers == 4
    clip = [n for n in tensors if n.endswith("input_max")]
    assert clip  # Inf bounds ("no clipping") still give finite scores and a ratio
    assert_ratios_lean_to_the_stronger_parent({n: tensors[n] for n in clip})
    assert {t["component"] for t in tensors.values()} >= {"vision", "audio", "attn", "ffn"}


@pytest.mark.real
@pytest.mark.slow
def test_real_smollm2_pair_end_to_end(smollm2, tmp_path, small_probes):
    mother = perturbed_copy(smollm2, tmp_path / "mother", scale=0.05, seed=1)
    code = main(["scan", "--father", str(smollm2), "--mother", str(mother), "--out",
                 str(tmp_path / "scan"), "--probes", str(small_probes), "--max-tokens", "8"])
    assert code == 0
    scan = load_scan(tmp_path / "scan" / "scan.json")
    assert scan.num_layers == 30 and len(scan.layers["mother"]) == 30
    assert_ratios_lean_to_the_stronger_parent(scan.tensors)
    assert len(set(scan.mri_ratios().values())) > 1
    import matplotlib.image

    picture = tmp_path / "scan" / "mds_father_mother.png"
    assert picture.read_bytes()[:8] == PNG_MAGIC
    assert matplotlib.image.imread(picture).shape[2] in (3, 4)


# -- bad input --------------------------------------------------------------

def _scan_cli(father, mother, out, *extra) -> int:
    return main(["scan", "--father", str(father), "--mother", str(mother), "--out", str(out),
                 "--max-prompts", "1", *map(str, extra)])


def test_mismatched_parents_refused(tiny_llama, tmp_path, capsys):
    other = make_tiny("gemma3", tmp_path / "gemma3")
    assert _scan_cli(tiny_llama, other, tmp_path / "scan") == 4
    assert "cannot be merged" in capsys.readouterr().err
    assert not (tmp_path / "scan").exists()


@pytest.mark.parametrize("content", [None, "", "not json\n", '{"prompt": "x"}\n',
                                     '{"text": ""}\n'])
def test_bad_probe_folder_refused(tiny_llama, tmp_path, capsys, content):
    probes = tmp_path / "probes"
    probes.mkdir()
    if content is not None:
        (probes / "math.jsonl").write_text(content)
    assert _scan_cli(tiny_llama, tiny_llama, tmp_path / "scan", "--probes", probes) == 2
    err = capsys.readouterr().err
    assert "probe" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "scan").exists()


def test_missing_probe_folder_refused(tiny_llama, tmp_path):
    assert _scan_cli(tiny_llama, tiny_llama, tmp_path / "scan", "--probes",
                     tmp_path / "nowhere") == 2


def test_prompt_longer_than_context_refused(tiny_llama, tmp_path, capsys):
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "long.jsonl").write_text(json.dumps({"text": "a" * 300}) + "\n")
    assert _scan_cli(tiny_llama, tiny_llama, tmp_path / "scan", "--probes", probes) == 2
    assert "more than the model's context of 256" in capsys.readouterr().err
    assert not (tmp_path / "scan").exists()
    assert not list(tmp_path.glob(".scan*"))  # no temporary folder or lock left behind


def test_existing_output_and_bad_settings_refused(tiny_llama, tmp_path, small_probes):
    (tmp_path / "scan").mkdir()
    assert _scan_cli(tiny_llama, tiny_llama, tmp_path / "scan", "--probes", small_probes) == 6
    assert _scan_cli(tiny_llama, tiny_llama, tmp_path / "x", "--max-tokens", "0") == 2
    with pytest.raises(UsageError):
        load_scan(tmp_path / "scan")
    (tmp_path / "bad.json").write_text('{"version": 1}')
    with pytest.raises(UsageError):
        load_scan(tmp_path / "bad.json")


@pytest.mark.parametrize("family", ["llama", "gemma3", "gemma4"])
def test_cached_skip_equals_naive_in_bfloat16(family):
    model = build_model(family, seed=1).to(torch.bfloat16)
    ids, mask = _batch()
    cached = layer_skip_distances(model, ids, mask, "cached")
    assert cached.dtype == torch.float32  # distances are computed in float32
    assert torch.allclose(cached, layer_skip_distances(model, ids, mask, "naive"), atol=1e-3)


@pytest.mark.real
@pytest.mark.slow
def test_real_gemma3_cached_skip_equals_naive(gemma3_real):
    from darwin_merge.io.loading import load_model, load_tokenizer

    model = load_model(gemma3_real)
    ids = load_tokenizer(gemma3_real)("The capital of France is Paris.",
                                      return_tensors="pt")["input_ids"]
    cached = layer_skip_distances(model, ids, None, "cached")
    assert cached.shape == (18, 1)
    assert torch.allclose(cached, layer_skip_distances(model, ids, None, "naive"), atol=1e-5)
