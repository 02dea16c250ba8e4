"""Health check: identical child, a real merge, sabotaged children, NaN weights, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from darwin_merge.cli import main
from darwin_merge.errors import UsageError
from darwin_merge.evolve.gate import health_accepted
from darwin_merge.health import HealthThresholds, check_health, run_health
from darwin_merge.health.check import (
    arc_position,
    expected_loss,
    function_losses,
    layer_table,
    token_loss_sum,
    verdict_of,
)
from darwin_merge.health.run import summary_lines
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
    """A copy of the father in another folder: on the arc at the father, its losses the
    father's (not the mother's), so healthy; the same check flags it once sabotaged."""
    father, mother = parents
    copy = save_model(AutoModelForCausalLM.from_pretrained(father), tmp_path / "copy")
    report = run_health(copy, father, mother, tmp_path / "health", **FEW)
    assert report["verdict"] == "healthy" and report["flagged_layers"] == []
    assert report["reasons"] == []
    for row in report["layers"]:
        assert row["sim_father"] == pytest.approx(1.0, abs=1e-9)
        assert row["sim_mother"] == pytest.approx(row["sim_parents"], abs=1e-9)
        assert row["off_arc"] == pytest.approx(0.0, abs=1e-6)
        assert row["position"] == pytest.approx(0.0, abs=1e-9)
        assert row["sim_parents"] < 1.0  # the parents do differ
    written = json.loads((tmp_path / "health" / "health.json").read_text())
    assert written["verdict"] == "healthy" and len(written["layers"]) == 4
    assert (tmp_path / "health" / "health.png").read_bytes()[:8] == PNG_MAGIC
    for losses in (r["loss"] for r in report["probe_sets"].values()):
        assert losses["child"] == pytest.approx(losses["father"], abs=1e-6)
        assert losses["child"] != pytest.approx(losses["mother"], abs=1e-6)
    broken = _sabotaged(copy, lambda m: m.model.layers[1].mlp.down_proj.weight.mul_(-3.0))
    assert check_health(broken, father, mother, tokenizer=load_tokenizer(father),
                        **FEW)["flagged_layers"][0] == 1


def test_real_merge_of_two_skill_pair_loses_no_function(two_skill_pair, tmp_path):
    """The uniform merge of the trio, checked on the trio's probe sets (its skills' text):
    between its parents on each. (On the default English sets, which no tiny model reads
    better than chance, the verdict was noise: it changed with the CPU the trio trained on.)"""
    from darwin_merge.genome import Genome
    from darwin_merge.merge import merge_models
    from darwin_recipes.demo.tiny import write_probe_files

    base, father, mother = two_skill_pair
    child = merge_models(father, mother, tmp_path / "child", base=base,
                         genome=Genome.uniform(0.5, density=0.9), progress=False)
    report = check_health(child, father, mother, probes=write_probe_files(tmp_path))
    assert list(report["probe_sets"]) == ["COPY", "MIRROR", "SHIFT"]  # the trio's own text
    # No function loss and nothing non-finite. Interference may be flagged: the trio's
    # specialists keep general text as the base reads it (demo/tiny.py's `keep`), so the
    # parents' own difference, the check's yardstick, is small; the blend's states then lie
    # off the arc between them (the parents-only reference, docs/HEALTH.md).
    assert report["verdict"] in ("healthy", "warning"), report["reasons"]
    assert report["function_loss"] == [] and report["nonfinite"]["weights"] == []
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
    assert report["verdict"] == "warning"  # interference only: the losses barely move
    assert not health_accepted(report["verdict"], allow_warning=False)  # the search rejects it
    assert report["flagged_layers"][0] == 2  # flagged where it starts
    assert not any(row["interference"] for row in report["layers"][:2])
    assert any("layer(s) 2" in reason for reason in report["reasons"])


def test_parents_measured_once_give_the_same_report(parents, tmp_path, monkeypatch):
    """A check against the parents' reference (measured once, as the search keeps it) is
    the check that runs all three models: the same report, to the bit, for a sabotaged
    child and a healthy one, without comparing the parents' folders again (their
    vocabularies were read when the reference was measured); a reference of other settings
    is refused."""
    import darwin_merge.inspection as inspection
    from darwin_merge.health import parent_reference

    father, mother = parents
    reference = parent_reference(father, mother, **FEW)
    tokenizer = load_tokenizer(father)
    reads = []
    real = inspection.vocabulary_diff
    monkeypatch.setattr(inspection, "vocabulary_diff",
                        lambda a, b: reads.append((a.path, b.path)) or real(a, b))
    for edit in (lambda m: m.model.layers[2].mlp.down_proj.weight.normal_(0.0, 0.2),
                 lambda m: None):
        child = _sabotaged(father, edit)
        reads.clear()
        alone = check_health(child, father, mother, tokenizer=tokenizer, **FEW)
        assert reads  # the parents compared with each other
        reads.clear()
        kept = check_health(child, father, mother, tokenizer=tokenizer, parents=reference,
                            **FEW)
        assert kept == alone and reads == []
    assert alone["verdict"] == "healthy" and kept["flagged_layers"] == []
    with pytest.raises(UsageError, match="other parents or settings"):
        check_health(child, father, mother, tokenizer=tokenizer, parents=reference,
                     max_prompts=2, max_tokens=24)


def test_a_verdict_only_check_stops_at_the_first_lost_probe_set(parents):
    """`stop_when_unhealthy` (the tuned baselines keep only the verdict): a child that loses
    function is measured up to its first lost probe set, those sets as the whole check
    measures them, with the same verdict; a child with no loss is checked in full."""
    father, mother = parents
    tokenizer = load_tokenizer(father)
    lossy = _sabotaged(father, lambda m: m.model.norm.weight.mul_(-4.0))
    warned = _sabotaged(father, lambda m: m.model.layers[2].mlp.down_proj.weight.normal_(0.0, 0.2))
    for child in (lossy, warned):
        whole = check_health(child, father, mother, tokenizer=tokenizer, **FEW)
        quick = check_health(child, father, mother, tokenizer=tokenizer,
                             stop_when_unhealthy=True, **FEW)
        assert quick["verdict"] == whole["verdict"]
        names = list(whole["probe_sets"])
        if whole["function_loss"]:
            first = names.index(whole["function_loss"][0])
            assert list(quick["probe_sets"]) == names[:first + 1] and first + 1 < len(names)
            assert quick["probe_sets"] == {n: whole["probe_sets"][n] for n in names[:first + 1]}
        else:
            assert quick == whole
    assert [check_health(c, father, mother, tokenizer=tokenizer, **FEW)["verdict"]
            for c in (lossy, warned)] == ["unhealthy", "warning"]


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


def _probe(angles=(0.0, 0.4, 0.4), losses=(3.0, 2.0, 2.5), spread=(1.0, 1.0), vocabulary=128):
    """One probe set's result, one layer: angles child-father, child-mother, parents."""
    return {"loss": dict(zip(("child", "father", "mother"), losses, strict=True)),
            "chance_loss": math.log(vocabulary),
            "similarity": {p: [0.9] for p in ("father", "mother", "parents")},
            "angle": {p: [a] for p, a in zip(("father", "mother", "parents"), angles, strict=True)},
            "spread": {"father": [spread[0]], "mother": [spread[1]]}}


def test_function_loss_is_judged_against_the_better_parent_where_the_child_sits():
    """A child that sits at the better parent (the father) may not be 1.05 nats worse
    than it, though it beats the worse parent; one that sits at the worse parent may."""
    rule = HealthThresholds(loss_margin=0.1)
    at_better = _probe(angles=(0.0, 0.4, 0.4), losses=(3.05, 2.0, 3.5))
    at_worse = _probe(angles=(0.4, 0.0, 0.4), losses=(3.05, 2.0, 3.5))
    halfway = _probe(angles=(0.2, 0.2, 0.4), losses=(2.9, 2.0, 3.5))
    assert expected_loss(at_better) == pytest.approx(2.0)
    assert expected_loss(halfway) == pytest.approx(2.75)
    assert function_losses({"MATH": at_better, "CODE": at_worse, "LANGUAGE": halfway},
                           rule) == ["MATH", "LANGUAGE"]
    verdict, reasons = verdict_of({"weights": [], "activations": []}, ["MATH"], [],
                                  {"MATH": at_better})
    assert verdict == "unhealthy" and "function loss on MATH" in reasons[0]
    assert verdict_of({"weights": [], "activations": []}, [], [3], {})[0] == "warning"


def test_function_loss_is_judged_only_where_a_parent_reads_better_than_chance():
    """A probe set both parents read worse than a uniform guess over the vocabulary (ln 128
    = 4.85 nats) shows no function to lose, however much worse the child reads it; once a
    parent reads it better than chance, the same child is judged."""
    rule = HealthThresholds(loss_margin=0.1)
    unread = _probe(angles=(0.0, 0.4, 0.4), losses=(9.0, 7.9, 8.2))
    read = _probe(angles=(0.0, 0.4, 0.4), losses=(9.0, 4.8, 8.2))
    assert function_losses({"LANGUAGE": unread, "SHIFT": read}, rule) == ["SHIFT"]
    wide = _probe(angles=(0.0, 0.4, 0.4), losses=(9.0, 7.9, 8.2), vocabulary=49152)
    assert function_losses({"LANGUAGE": wide}, rule) == ["LANGUAGE"]  # ln V = 10.8


def test_a_tiny_model_reading_english_worse_than_chance_leaves_function_unjudged(
        two_skill_pair):
    """The trio reads the English probe sets worse than a uniform guess: the report says
    function loss was not judged there, and why, instead of a verdict decided by noise."""
    _, father, mother = two_skill_pair
    report = check_health(father, father, mother, max_prompts=2, max_tokens=16)
    assert report["function_unjudged"] == list(report["probe_sets"])
    assert report["function_loss"] == []
    assert all(r["loss"]["mother"] > r["chance_loss"] == pytest.approx(math.log(128))
               for r in report["probe_sets"].values())
    assert "function loss not judged on REASONING" in summary_lines(report)[1]


def test_arc_position_of_a_child():
    assert arc_position(0.3, 0.3, 0.6) == (0.0, 0.5)  # between: on the arc
    assert arc_position(0.0, 0.5, 0.5) == (0.0, 0.0)  # the father itself
    assert arc_position(0.2, 0.9, 0.5) == (0.2, 0.0)  # beyond the father: its distance
    off, t = arc_position(0.5, 0.5, 0.6)  # above the middle: 3-4-5 triangle
    assert off == pytest.approx(0.4) and t == pytest.approx(0.5)
    assert arc_position(0.1, 0.2, 0.0) == (0.1, 0.0)  # identical parents: the nearer one


def _flagged(angles, spread=(1.0, 1.0), rule=None):
    return layer_table({"P": _probe(angles=angles, spread=spread)},
                       rule or HealthThresholds())[0]["interference"]


def test_interference_allowance_does_not_grow_with_distant_parents():
    """The review's two cases: a child 0.75 rad from both parents 0.75 apart, and 0.8 rad
    of damage between parents 1.45 apart (the old rule let both pass)."""
    assert _flagged((0.75, 0.75, 0.75))
    half = 1.45 / 2
    assert _flagged(((half ** 2 + 0.8 ** 2) ** 0.5,) * 2 + (1.45,), spread=(1.07, 1.2))
    assert not _flagged((0.3, 0.3, 0.6))  # a blend on the arc, however far apart
    assert not _flagged((0.3, 0.3, 0.6), rule=HealthThresholds(interference_ratio=0.0))
    # parents farther apart than their own spread: the spread caps the allowance
    wide = layer_table({"P": _probe(angles=(1.0, 1.0, 1.6), spread=(0.5, 0.9))},
                       HealthThresholds())[0]
    assert wide["allowed_off_arc"] == pytest.approx(0.65 * 0.5 + 0.02)


def _detection_start(parents: float, spread: float, step: float = 0.01) -> float:
    """The smallest off-arc height above the parents' midpoint that is flagged."""
    height = 0.0
    while True:
        to_each = ((parents / 2) ** 2 + height ** 2) ** 0.5
        if _flagged((to_each, to_each, parents), spread=(spread, spread)):
            return round(height, 2)
        height += step


@pytest.mark.parametrize("side, start", [(0.1, 0.09), (0.3, 0.22), (0.75, 0.51),
                                         (1.0, 0.67)])
def test_graded_damage_equilateral_detection_starts_below_the_side(side, start):
    """Equilateral: the child as far from each parent as they are from each other. Graded
    heights above the parents' midpoint: detection starts well below the equilateral
    point (side * 0.866), at the heights docs/HEALTH.md lists."""
    assert _detection_start(side, spread=1.0) == pytest.approx(start, abs=0.011)
    assert _flagged((side, side, side), spread=(1.0, 1.0))


def test_graded_damage_moves_a_real_merge_further_off_its_parents_arc(two_skill_pair,
                                                                      tmp_path):
    """Graded noise into layer 0 of a real merge of the two-skill pair: layer 0's distance
    off the arc between the parents grows with the noise, and no amount of it makes the
    child look healthier. (The merge itself is flagged for interference with the trio v2,
    whose specialists keep general text as the base reads it: the thresholds that placed
    detection at scale 0.08 between the v1 trio's distant parents no longer apply; the
    base-relative check of docs/HEALTH.md is to recalibrate them.) On the trio's own probe
    sets, as the tiny demo checks its children."""
    from darwin_merge.genome import Genome
    from darwin_merge.merge import merge_models
    from darwin_recipes.demo.tiny import write_probe_files

    base, father, mother = two_skill_pair
    merged = merge_models(father, mother, tmp_path / "child", base=base,
                          genome=Genome.uniform(0.5, density=0.9), progress=False)
    probes = write_probe_files(tmp_path)
    off_arc, verdicts = [], []
    for scale in (0.0, 0.02, 0.05, 0.08, 0.2):
        child = AutoModelForCausalLM.from_pretrained(merged).eval()
        weight = child.model.layers[0].mlp.down_proj.weight
        noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            weight.add_(noise * scale)
        report = check_health(child, father, mother, probes=probes,
                              tokenizer=load_tokenizer(father))
        off_arc.append(report["layers"][0]["off_arc"])
        verdicts.append(report["verdict"])
    assert off_arc == sorted(off_arc) and off_arc[-1] > 2 * off_arc[0], off_arc
    rank = {"healthy": 0, "warning": 1, "unhealthy": 2}
    assert [rank[v] for v in verdicts] == sorted(rank[v] for v in verdicts), verdicts


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
