"""The health check with a base (`darwin health --base`, docs/HEALTH.md "With a base"): a
child that keeps both fine-tunes may pay both of their costs over the base; planted damage
is still unhealthy; a parents' reference is used only with the base it was measured with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from darwin_merge.cli import main
from darwin_merge.errors import UsageError
from darwin_merge.health import check_health, parent_reference, run_health
from darwin_merge.health.run import summary_lines
from darwin_merge.io.loading import load_tokenizer
from darwin_merge.records import HealthRecord, parse_record
from tiny_models import TOKENIZER_FILES, make_tiny_pair, perturbed_copy

FEW = {"max_prompts": 3, "max_tokens": 24}
MARGIN = 0.1  # the default loss margin (nats per token)

pytestmark = pytest.mark.usefixtures("one_thread")


def with_task_vectors(base: Path, vectors: dict[Path, float], folder: Path | None = None):
    """base + sum of weight * (model - base): a folder when `folder` is given (with the
    base's own tokenizer), else the model in memory."""
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    others = {path: AutoModelForCausalLM.from_pretrained(path).state_dict() for path in vectors}
    with torch.no_grad():
        for name, tensor in model.named_parameters():  # a tied tensor once
            tensor.add_(sum(weight * (others[path][name] - tensor)
                            for path, weight in vectors.items()))
    if folder is None:
        return model
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def trio_probes(tmp_path_factory):
    from darwin_recipes.demo.tiny import write_probe_files

    return write_probe_files(tmp_path_factory.mktemp("trio-probes"))


@pytest.fixture(scope="module")
def partial_trio(two_skill_pair, tmp_path_factory):
    """(base, father, mother, child) folders: the two-skill trio's fine-tunes at 0.75 of their
    task vectors, and their child base + both (task arithmetic 1.0 of the pair). Each parent
    then costs the base something on COPY (each forgot copying on its own alphabet) and one
    still reads COPY better than chance, so function loss is judged there."""
    base, father, mother = two_skill_pair
    root = tmp_path_factory.mktemp("partial-trio")
    father = with_task_vectors(base, {father: 0.75}, root / "father")
    mother = with_task_vectors(base, {mother: 0.75}, root / "mother")
    child = with_task_vectors(base, {father: 1.0, mother: 1.0}, root / "child")
    return base, father, mother, child


def test_a_child_paying_both_fine_tunes_costs_passes_with_the_base_only(partial_trio,
                                                                         trio_probes):
    """Task arithmetic 1.0 of two fine-tunes that each cost the base something on COPY: the
    child pays both costs there, more than either parent, so the parents alone reject it;
    against the base (its loss plus both parents' own costs over it) it is healthy."""
    base, father, mother, child = partial_trio
    without = check_health(child, father, mother, probes=trio_probes)
    kept = check_health(child, father, mother, probes=trio_probes, base=base)
    copy = kept["probe_sets"]["COPY"]
    loss = copy["loss"]
    # the case is real: COPY judged, each parent costs the base, the child pays more
    assert min(loss["father"], loss["mother"]) < copy["chance_loss"] - 0.05, loss
    assert loss["father"] - loss["base"] > 0.1 and loss["mother"] - loss["base"] > 0.3, loss
    assert loss["child"] > max(loss["father"], loss["mother"]) + MARGIN, loss
    assert without["probe_sets"]["COPY"]["loss"] == {k: v for k, v in loss.items()
                                                     if k != "base"}
    assert without["verdict"] == "unhealthy" and without["function_loss"] == ["COPY"]
    assert without["probe_sets"]["COPY"]["function_reference"] == "parents"
    assert kept["verdict"] == "healthy" and kept["function_loss"] == [], kept["reasons"]
    assert copy["function_reference"] == "base"
    assert copy["allowed_loss"] == pytest.approx(
        loss["base"] + (loss["father"] - loss["base"]) + (loss["mother"] - loss["base"])
        + MARGIN)
    assert kept["with_base"] and not without["with_base"]
    for name in ("SHIFT", "MIRROR"):  # the skills' own sets: the parents' reference decides
        assert kept["probe_sets"][name]["function_reference"] == "parents"


@pytest.fixture(scope="module")
def depth_split(two_skill_pair):
    """The two-skill trio's child base + both task vectors (the father's fine-tuned layer 1,
    the mother's layer 0: the depth split), in memory, and the trio."""
    base, father, mother = two_skill_pair
    return with_task_vectors(base, {father: 1.0, mother: 1.0}), base, father, mother


def _zero_block(model):
    for p in model.model.layers[0].parameters():
        p.zero_()


def _scale_block(model):
    for p in model.model.layers[1].parameters():
        p.mul_(3.0)


def _nan_tensor(model):
    model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")


@pytest.mark.parametrize("damage", ["block 0 zeroed", "block 1 scaled x3", "NaN tensor"])
def test_planted_damage_is_still_unhealthy_with_a_base(depth_split, trio_probes, damage):
    """The depth split is healthy with its base; planted into it, one decoder block's
    weights zeroed, one block scaled x3, one NaN: unhealthy with the base as without it, on
    the same probe sets. (Had a parent's gain over the base been clamped to 0, the base's
    reference on a parent's own skill would be the base's loss: the first two passed.)"""
    import copy

    child, base, father, mother = depth_split
    options = {"probes": trio_probes, "tokenizer": load_tokenizer(father)}
    assert check_health(child, father, mother, base=base, **options)["verdict"] == "healthy"
    damaged = copy.deepcopy(child)
    with torch.no_grad():
        {"block 0 zeroed": _zero_block, "block 1 scaled x3": _scale_block,
         "NaN tensor": _nan_tensor}[damage](damaged)
    without = check_health(damaged, father, mother, **options)
    kept = check_health(damaged, father, mother, base=base, **options)
    assert without["verdict"] == kept["verdict"] == "unhealthy", kept["reasons"]
    assert kept["function_loss"] == without["function_loss"]
    if damage == "NaN tensor":
        assert kept["nonfinite"]["weights"] == ["child: model.layers.1.mlp.up_proj.weight"]
    else:
        assert kept["function_loss"], kept["reasons"]


@pytest.fixture(scope="module")
def close_trio(tmp_path_factory):
    """(base, father, mother): a tiny Llama pair close to each other and a base near both."""
    father, mother = make_tiny_pair(tmp_path_factory.mktemp("close"), seed=3, scale=0.02,
                                    mother_seed=9)
    return perturbed_copy(father, father.parent / "base", scale=0.02, seed=5), father, mother


def test_a_reference_is_used_only_with_the_base_it_was_measured_with(close_trio):
    """Measured with a base, the reference gives the check that runs all four models, to
    the bit; a reference measured without a base is refused for a check with one, and the
    other way round (one line each)."""
    base, father, mother = close_trio
    tokenizer = load_tokenizer(father)
    child = AutoModelForCausalLM.from_pretrained(father).eval()
    with torch.no_grad():
        child.model.layers[2].mlp.down_proj.weight.normal_(0.0, 0.2)
    with_base = parent_reference(father, mother, base=base, **FEW)
    assert with_base.base == str(base)
    alone = check_health(child, father, mother, tokenizer=tokenizer, base=base, **FEW)
    kept = check_health(child, father, mother, tokenizer=tokenizer, base=base,
                        parents=with_base, **FEW)
    assert kept == alone and all("base" in r["loss"] for r in kept["probe_sets"].values())
    without_base = parent_reference(father, mother, **FEW)
    with pytest.raises(UsageError, match="measured without a base and this check has one") \
            as refused:
        check_health(child, father, mother, tokenizer=tokenizer, base=base,
                     parents=without_base, **FEW)
    assert "\n" not in str(refused.value)
    with pytest.raises(UsageError, match="measured with a base and this check has none"):
        check_health(child, father, mother, tokenizer=tokenizer, parents=with_base, **FEW)
    with pytest.raises(UsageError, match="other parents or settings"):
        check_health(child, father, mother, tokenizer=tokenizer, base=mother,
                     parents=with_base, **FEW)


def test_darwin_health_with_base_writes_and_shows_the_reference(partial_trio, trio_probes,
                                                                tmp_path, capsys):
    """`darwin health --base`: health.json holds the base's loss and which reference
    decided each probe set; the summary shows both."""
    base, father, mother, child = partial_trio
    code = main(["health", "--child", str(child), "--father", str(father), "--mother",
                 str(mother), "--base", str(base), "--probes", str(trio_probes),
                 "--out", str(tmp_path / "report")])
    printed = capsys.readouterr().out
    assert code == 0 and "verdict: healthy" in printed
    written = json.loads((tmp_path / "report" / "health.json").read_text())
    assert written["with_base"] is True
    copy = written["probe_sets"]["COPY"]
    assert copy["function_reference"] == "base" and set(copy["loss"]) == {
        "child", "father", "mother", "base"}
    line = next(line for line in printed.splitlines() if line.strip().startswith("COPY:"))
    assert "(base reference)" in line and f"base {copy['loss']['base']:.3f}" in line
    assert "(parents reference)" in next(line for line in printed.splitlines()
                                         if line.strip().startswith("SHIFT:"))


def test_a_health_file_from_before_the_base_still_reads(partial_trio, trio_probes, tmp_path):
    """health.json written before `with_base`, `allowed_loss` and `function_reference`
    existed reads as a check without a base, and its summary still prints."""
    _, father, mother, child = partial_trio
    report = run_health(child, father, mother, tmp_path / "health", probes=trio_probes)
    old = json.loads((tmp_path / "health" / "health.json").read_text())
    del old["with_base"]
    for result in old["probe_sets"].values():
        del result["allowed_loss"], result["function_reference"]
    assert parse_record(HealthRecord, old, "old health.json").with_base is False
    lines = summary_lines(old)
    assert any(line.strip().startswith("COPY: child") for line in lines)
    assert report["verdict"] == old["verdict"]


def test_the_search_checks_its_children_against_the_recipes_base(partial_trio, trio_probes,
                                                                  tmp_path):
    """evolve/gate.py: a recipe with a base measures it beside the parents (kept for every
    check) and judges its children by the base's reference: the child the parents alone
    reject is kept."""
    from darwin_merge.evolve.gate import child_health, health_accepted, measured_parents
    from darwin_merge.evolve.recipe import build_recipe

    base, father, mother, child = partial_trio
    recipe = build_recipe(father=father, mother=mother, base=base, fitness={"arc_easy": 1.0},
                          out=tmp_path / "run", probes=trio_probes, probe_max_prompts=8,
                          probe_max_tokens=24)
    reference = measured_parents(recipe)
    assert reference is not None and reference.base == str(base)
    report = child_health(recipe, child)
    assert report["with_base"] and report["probe_sets"]["COPY"]["function_reference"] == "base"
    assert health_accepted(report["verdict"], allow_warning=False), report["reasons"]
    alone = child_health(recipe.model_copy(update={"base": None}), child)
    assert not alone["with_base"] and alone["function_loss"] == ["COPY"]
