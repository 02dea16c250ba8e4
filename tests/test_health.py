"""Health check: identical child, a real merge, sabotaged children, NaN weights, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from darwin_merge.cli import main
from darwin_merge.errors import UsageError
from darwin_merge.health import HealthThresholds, check_health, run_health
from darwin_merge.health.check import layer_table, token_loss_sum, verdict_of
from darwin_merge.io.loading import load_tokenizer
from tiny_models import make_tiny, make_tiny_pair, save_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FEW = {"max_prompts": 3, "max_tokens": 24}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parents(tmp_path_factory):
    """A tiny Llama father and a mother close to it (small seeded noise)."""
    return make_tiny_pair(tmp_path_factory.mktemp("health"), seed=3, scale=0.02, mother_seed=9)


def _sabotaged(father, edit):
    model = AutoModelForCausalLM.from_pretrained(father).eval()
    with torch.no_grad():
        edit(model)
    return model


def test_child_identical_to_father_is_healthy(parents, tmp_path):
    father, mother = parents
    report = check_health(father, father, mother, out=tmp_path / "health", **FEW)
    assert report["verdict"] == "healthy" and report["flagged_layers"] == []
    assert report["reasons"] == []
    for row in report["layers"]:
        assert row["sim_father"] == pytest.approx(1.0, abs=1e-9)
        assert row["sim_mother"] == pytest.approx(row["sim_parents"], abs=1e-9)
        assert row["detour"] == pytest.approx(0.0, abs=1e-6)
        assert row["sim_parents"] < 1.0  # the parents do differ
    written = json.loads((tmp_path / "health" / "health.json").read_text())
    assert written["verdict"] == "healthy" and len(written["layers"]) == 4
    assert (tmp_path / "health" / "health.png").read_bytes()[:8] == PNG_MAGIC
    losses = report["probe_sets"]["MATH"]["loss"]
    assert losses["child"] == losses["father"]


def test_real_merge_of_two_skill_pair_is_healthy(two_skill_pair, tmp_path):
    from darwin_merge.genome import Genome
    from darwin_merge.merge import merge_models

    base, father, mother = two_skill_pair
    child = merge_models(father, mother, tmp_path / "child", base=base,
                         genome=Genome.uniform(0.5, density=0.9), progress=False)
    report = check_health(child, father, mother)
    assert report["verdict"] == "healthy", report["reasons"]
    assert report["function_loss"] == []
    for row in report["layers"]:  # the child really is a blend: off both parents
        assert row["sim_father"] < 0.999 and row["sim_mother"] < 0.999


@pytest.mark.parametrize("sabotage", ["mlp_zeroed", "mlp_noise", "attn_scaled"])
def test_sabotaged_layer_is_flagged(parents, sabotage):
    father, mother = parents
    edits = {
        "mlp_zeroed": lambda m: m.model.layers[2].mlp.down_proj.weight.zero_(),
        "mlp_noise": lambda m: m.model.layers[2].mlp.down_proj.weight.normal_(0.0, 0.2),
        "attn_scaled": lambda m: m.model.layers[2].self_attn.o_proj.weight.mul_(5.0),
    }
    child = _sabotaged(father, edits[sabotage])
    report = check_health(child, father, mother, tokenizer=load_tokenizer(father), **FEW)
    assert report["verdict"] != "healthy"
    assert report["flagged_layers"][0] == 2  # flagged where it starts
    assert not any(row["interference"] for row in report["layers"][:2])
    assert any("layer(s) 2" in reason for reason in report["reasons"])


def test_nan_weight_is_unhealthy(parents, tmp_path, capsys):
    father, mother = parents

    def poison(model):
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")

    child = save_model(_sabotaged(father, poison), tmp_path / "nan-child")
    report = check_health(child, father, mother, **FEW)
    assert report["verdict"] == "unhealthy"
    assert report["nonfinite"]["weights"] == ["child: model.layers.1.mlp.up_proj.weight"]
    code = main(["health", "--child", str(child), "--father", str(father), "--mother",
                 str(mother), "--out", str(tmp_path / "report"), "--max-prompts", "1"])
    assert code == 0
    assert "verdict: unhealthy" in capsys.readouterr().out
    assert json.loads((tmp_path / "report" / "health.json").read_text())["verdict"] == \
        "unhealthy"


def test_non_finite_activations_are_unhealthy(parents, tmp_path):
    """Finite weights that overflow in the forward pass: caught in the activations."""
    father, mother = parents
    def overflow(model):
        model.model.layers[1].mlp.down_proj.weight.fill_(3e38)
        model.model.layers[1].mlp.up_proj.weight.fill_(1e3)

    child = _sabotaged(father, overflow)
    report = run_health(child, father, mother, tmp_path / "health",
                        tokenizer=load_tokenizer(father), **FEW)
    assert report["verdict"] == "unhealthy"
    assert report["nonfinite"]["weights"] == []
    assert any("child from layer 1" in a for a in report["nonfinite"]["activations"])
    text = (tmp_path / "health" / "health.json").read_text()
    assert "NaN" not in text and json.loads(text)["verdict"] == "unhealthy"  # strict JSON


def test_function_loss_rule():
    def probe(child, father, mother):
        return {"loss": {"child": child, "father": father, "mother": mother},
                "similarity": {p: [1.0] for p in ("father", "mother", "parents")},
                "angle": {p: [0.0] for p in ("father", "mother", "parents")}}

    per_probe = {"MATH": probe(3.0, 2.0, 2.5), "CODE": probe(2.55, 2.0, 2.5)}
    thresholds = HealthThresholds(loss_margin=0.1)
    from darwin_merge.health.check import function_losses

    assert function_losses(per_probe, thresholds) == ["MATH"]
    verdict, reasons = verdict_of({"weights": [], "activations": []}, ["MATH"], [], per_probe)
    assert verdict == "unhealthy" and "function loss on MATH" in reasons[0]
    assert verdict_of({"weights": [], "activations": []}, [], [3], per_probe)[0] == "warning"


def test_interference_rule_uses_the_detour():
    def angles(cf, cm, fm):
        return {"similarity": {p: [0.9] for p in ("father", "mother", "parents")},
                "angle": {"father": [cf], "mother": [cm], "parents": [fm]},
                "loss": {}}

    rule = HealthThresholds(interference_ratio=1.0, interference_margin=0.02)
    between = layer_table({"P": angles(0.3, 0.3, 0.6)}, rule)[0]  # on the arc: no detour
    assert between["detour"] == pytest.approx(0.0) and not between["interference"]
    off = layer_table({"P": angles(0.5, 0.5, 0.2)}, rule)[0]  # detour 0.8 > 0.22
    assert off["detour"] == pytest.approx(0.8) and off["interference"]
    edge = layer_table({"P": angles(0.3, 0.3, 0.2)}, rule)[0]  # detour 0.4 > 0.22
    assert edge["interference"]
    assert not layer_table({"P": angles(0.3, 0.3, 0.2)},
                           HealthThresholds(interference_ratio=2.0))[0]["interference"]


def test_loss_counts_only_real_next_tokens():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = 10.0  # predicts token 2 at position 1 confidently
    ids = torch.tensor([[1, 2, 0]])
    total, count = token_loss_sum(logits, ids, torch.tensor([[1, 1, 0]]))
    assert count == 1 and total == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits[0, :1], ids[0, 1:2])))


def test_bad_inputs(parents, tmp_path):
    father, mother = parents
    other = make_tiny("gemma3", tmp_path / "g3")
    code = main(["health", "--child", str(other), "--father", str(father), "--mother",
                 str(mother), "--out", str(tmp_path / "out")])
    assert code == 4 and not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="tokenizer"):
        model = AutoModelForCausalLM.from_pretrained(father)
        check_health(model, model, model, **FEW)
    with pytest.raises(UsageError, match=">= 0"):
        HealthThresholds(loss_margin=-1.0)


@pytest.mark.parametrize("family", ["gemma3", "gemma4", "gemma4_moe"])
def test_gemma_families_in_memory(family):
    """In-memory models (as the search passes them), Gemma 3 and Gemma 4 decoders."""
    from darwin_merge.scan.layers import decoder_of
    from tiny_models import build_model, char_tokenizer

    father, mother = build_model(family, seed=0), build_model(family, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in mother.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.01 * (p.std() + 1e-3))
    report = check_health(father, father, mother, tokenizer=char_tokenizer(), **FEW)
    assert report["verdict"] == "healthy"
    assert all(row["sim_father"] == pytest.approx(1.0, abs=1e-9) for row in report["layers"])
    child = build_model(family, seed=0)
    with torch.no_grad():
        weight = decoder_of(child).layers[1].mlp.down_proj.weight
        weight.copy_(torch.randn(weight.shape, generator=gen))
    report = check_health(child, father, mother, tokenizer=char_tokenizer(), **FEW)
    assert report["verdict"] != "healthy" and report["flagged_layers"][0] == 1


@pytest.mark.real
@pytest.mark.slow
def test_real_smollm2_identical_and_sabotaged(smollm2):
    import copy

    from darwin_merge.io.loading import load_model

    father = load_model(smollm2)
    mother = copy.deepcopy(father)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in mother.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.01 * (p.std() + 1e-3))
    options = {"tokenizer": load_tokenizer(smollm2), "max_prompts": 2, "max_tokens": 16}
    report = check_health(father, father, mother, **options)
    assert report["verdict"] == "healthy" and len(report["layers"]) == 30
    child = copy.deepcopy(father)
    with torch.no_grad():
        child.model.layers[12].mlp.down_proj.weight.zero_()
    report = check_health(child, father, mother, **options)
    assert report["verdict"] != "healthy" and report["flagged_layers"][0] == 12
