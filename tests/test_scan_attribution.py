"""The scan's skill attribution: it finds where each parent's skill was trained, its ratios
carry decisions, identical parents give 0.5, and a resumed scan notices changed inputs."""

from __future__ import annotations

import math

import pytest
import torch

from darwin_merge.cli import main
from darwin_merge.scan import load_scan, run_scan
from darwin_merge.scan.attribution import group_of, tensor_groups
from darwin_merge.scan.ratios import attribution_ratio, importance_contrast
from darwin_recipes.demo.tiny import task_paths

pytestmark = pytest.mark.usefixtures("one_thread")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def skill_tasks(two_skill_pair):
    """The two skills' task files, as the tiny demo writes them (`<bos>S abc=` -> `bcd`)."""
    tasks = task_paths(two_skill_pair[0].parent)
    return {"skill_a": tasks["shift"], "skill_b": tasks["mirror"]}


@pytest.fixture(scope="module")
def small_probes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probes")
    (folder / "letters.jsonl").write_text('{"text": "C abc=abc"}\n{"text": "C 307=307"}\n')
    return folder


@pytest.fixture(scope="module")
def trio_scan(two_skill_pair, skill_tasks, small_probes, tmp_path_factory):
    _, father, mother = two_skill_pair
    fitness = {str(skill_tasks["skill_a"]): 0.5, str(skill_tasks["skill_b"]): 0.5}
    out = tmp_path_factory.mktemp("trio-scan") / "scan"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests' scans (`one_thread` comes after this fixture):
    try:  # the thread count changes the float sums, and tests compare scans to the bit
        scan = run_scan(father, mother, out, probes=small_probes, fitness=fitness,
                        attribution_items=24, progress=False)
    finally:
        torch.set_num_threads(threads)
    return scan, out, fitness


def test_attribution_puts_each_skill_where_it_was_trained(trio_scan, skill_tasks):
    """The father learnt skill A in layer 1 (block 3), the mother skill B in layer 0
    (block 0): the mother's block 0 must carry skill B, her block 3 must cost skill A."""
    scan, _, _ = trio_scan
    tasks = scan.attribution["tasks"]
    skill_a, skill_b = (tasks[str(skill_tasks[k])]["groups"] for k in ("skill_a", "skill_b"))
    top_b = max(skill_b, key=lambda g: skill_b[g]["effect"])
    worst_a = min(skill_a, key=lambda g: skill_a[g]["effect"])
    assert top_b.startswith("block0.") and skill_b[top_b]["effect"] > 0
    assert worst_a.startswith("block3.") and skill_a[worst_a]["effect"] < 0
    for group in ("block1.attn", "block2.ffn", "block4.norm"):  # untrained: no layer there
        assert group not in skill_a


def test_ratios_carry_decisions_on_the_side_the_attribution_justifies(trio_scan):
    """The mother's layer 0 (skill B) is taken from her, the father's layer-1 MLP (skill A)
    from him; the layer-1 attention, which helps A and costs B, is not asked to be either."""
    scan, _, _ = trio_scan
    tensors, groups = scan.tensors, scan.attribution["groups"]
    for tensor in ("self_attn.q_proj.weight", "mlp.up_proj.weight"):
        assert tensors[f"model.layers.0.{tensor}"]["mri_ratio"] > 0.85
    assert tensors["model.layers.1.mlp.up_proj.weight"]["mri_ratio"] < 0.15
    assert groups["block0.attn"]["z"] > 2 and groups["block0.ffn"]["z"] > 2
    assert groups["block3.ffn"]["z"] < -2
    decided = [r for r in scan.mri_ratios().values() if abs(r - 0.5) >= 0.25]
    assert len(decided) >= len(tensors) // 4
    assert scan.formula == "attribution"


def test_scan_files_picture_and_cli_summary(trio_scan, two_skill_pair, skill_tasks, tmp_path,
                                            capsys, small_probes):
    _, out, _ = trio_scan
    assert (out / "attribution.png").read_bytes()[:8] == PNG_MAGIC
    _, father, mother = two_skill_pair
    fitness = f"{skill_tasks['skill_a']}=1,{skill_tasks['skill_b']}=1"
    code = main(["scan", "--father", str(father), "--mother", str(mother), "--out",
                 str(tmp_path / "cli"), "--probes", str(small_probes), "--fitness", fitness,
                 "--attribution-items", "4"])
    printed = capsys.readouterr().out
    assert code == 0 and "the mother's version helps most in block0" in printed.replace("\n", " ")
    assert load_scan(tmp_path / "cli").settings.attribution_items == 4


def test_leaving_the_probe_sets_out_of_the_attribution_keeps_every_ratio(
        trio_scan, two_skill_pair, small_probes, tmp_path):
    """With a fitness, the probe sets' rows only feed the picture: a scan without them
    (the specialists preset's choice) gives every tensor the same ratio, on another hash."""
    scan, _, fitness = trio_scan
    _, father, mother = two_skill_pair
    lean = run_scan(father, mother, tmp_path / "lean", probes=small_probes, fitness=fitness,
                    attribution_items=24, progress=False, attribute_probe_sets=False)
    assert "LETTERS" in scan.attribution["tasks"]
    assert set(lean.attribution["tasks"]) == set(fitness)
    assert lean.mri_ratios() == scan.mri_ratios()
    assert lean.inputs_sha256 != scan.inputs_sha256


def test_identical_parents_give_exactly_half(two_skill_pair, skill_tasks, small_probes, tmp_path):
    _, father, _ = two_skill_pair
    scan = run_scan(father, father, tmp_path / "same", probes=small_probes,
                    fitness={str(skill_tasks["skill_a"]): 1.0}, attribution_items=4,
                    progress=False)
    assert set(scan.mri_ratios().values()) == {0.5}
    assert all(g["z"] == 0.0 for g in scan.attribution["groups"].values())


def test_same_inputs_give_the_same_bytes_and_a_resume_reuses_them(
        two_skill_pair, skill_tasks, small_probes, trio_scan, tmp_path):
    scan, out, fitness = trio_scan
    _, father, mother = two_skill_pair
    again = run_scan(father, mother, tmp_path / "again", probes=small_probes, fitness=fitness,
                     attribution_items=24, progress=False)
    assert (tmp_path / "again" / "scan.json").read_bytes() == (out / "scan.json").read_bytes()
    assert again.inputs_sha256 == scan.inputs_sha256
    stamp = (tmp_path / "again" / "scan.json").stat().st_mtime_ns
    reused = run_scan(father, mother, tmp_path / "again", probes=small_probes, fitness=fitness,
                      attribution_items=24, progress=False, reuse=True)
    assert reused == again and (tmp_path / "again" / "scan.json").stat().st_mtime_ns == stamp


def test_a_resumed_scan_with_changed_probe_items_is_recomputed(
        two_skill_pair, skill_tasks, small_probes, trio_scan, tmp_path):
    scan, out, fitness = trio_scan
    _, father, mother = two_skill_pair
    changed = tmp_path / "skill_b.jsonl"
    lines = skill_tasks["skill_b"].read_text().splitlines()
    changed.write_text("\n".join(lines[1:]) + "\n")  # one item fewer
    other = {str(skill_tasks["skill_a"]): 0.5, str(changed): 0.5}
    redone = run_scan(father, mother, out.parent / "copy", probes=small_probes, fitness=other,
                      attribution_items=24, progress=False)
    assert redone.inputs_sha256 != scan.inputs_sha256
    again = run_scan(father, mother, out.parent / "copy", probes=small_probes, fitness=fitness,
                     attribution_items=24, progress=False, reuse=True, overwrite=True)
    assert again.inputs_sha256 == scan.inputs_sha256


def test_card_formula_is_kept_and_selectable(two_skill_pair, small_probes, trio_scan,
                                             tmp_path):
    """`formula="card"` (the source card's importance ratio) is recorded and gives other
    ratios than the attribution; it is the mother's share: the parents swapped, every
    tensor's ratio is its complement, and a parent against itself gives one half.
    (Fails if the card mode mixes the parents' scores or leans to one side.)"""
    _, father, mother = two_skill_pair
    scan = run_scan(father, mother, tmp_path / "card", probes=small_probes, formula="card",
                    progress=False)
    swapped = run_scan(mother, father, tmp_path / "swapped", probes=small_probes,
                       formula="card", progress=False)
    itself = run_scan(father, father, tmp_path / "itself", probes=small_probes,
                      formula="card", progress=False)
    assert scan.formula == "card" and scan.attribution is None
    ratios = scan.mri_ratios()
    assert swapped.mri_ratios() == pytest.approx({n: 1.0 - r for n, r in ratios.items()})
    assert set(itself.mri_ratios().values()) == {0.5}
    assert ratios != pytest.approx(trio_scan[0].mri_ratios(), abs=1e-3)
    assert main(["scan", "--father", str(father), "--mother", str(mother), "--out",
                 str(tmp_path / "bad"), "--mri", "magic"]) == 2


def test_groups_and_contrast():
    """Tensors fall in their block's component group; the contrast counts a layer for what
    it is to each parent (a parent's scores shifted or scaled change nothing) and turns
    sign when the parents swap; the ratio is the mother's share: one half with no evidence,
    the complement when every piece of evidence turns round, rising with each piece.
    (Fails if the contrast compares raw scores, or the ratio leans to one parent.)"""
    from darwin_merge.arch.taxonomy import TensorInfo

    infos = [TensorInfo("model.layers.0.self_attn.q_proj.weight", "attn", 0, 0, "dare_ties"),
             TensorInfo("model.layers.5.input_layernorm.weight", "norm", 5, 3, "linear"),
             TensorInfo("model.layers.5.mlp.experts.down_proj", "moe", 5, 3, "dare_ties"),
             TensorInfo("lm_head.weight", "embed", None, None, "dare_ties"),
             TensorInfo("model.embed_tokens.weight", "embed", None, None, "dare_ties"),
             TensorInfo("model.norm.weight", "norm", None, None, "linear")]
    assert [group_of(i) for i in infos] == ["block0.attn", "block3.norm", "block3.ffn",
                                            "lm_head", "embed", "final_norm"]
    assert list(tensor_groups(infos))[:3] == ["block0.attn", "block3.ffn", "block3.norm"]
    father, mother = [1.0, 2.0, 3.0, 6.0], [3.0, 1.0, 2.0, 2.5]
    contrast = importance_contrast(father, mother)
    assert importance_contrast([10 * s + 7 for s in father], [0.1 * s - 2 for s in mother]) \
        == pytest.approx(contrast)
    assert importance_contrast(mother, father) == pytest.approx([-c for c in contrast])
    assert importance_contrast(father, father) == [0.0] * 4
    assert contrast[0] > 0 > contrast[3]  # the mother's top layer, the father's top layer
    assert attribution_ratio(0.0, 0.0, 0.0) == 0.5
    for evidence in [(1.3, 0.0, 0.0), (0.0, 0.7, 0.0), (0.0, 0.0, 0.4), (0.5, -1.2, 0.3)]:
        turned = tuple(-e for e in evidence)
        assert attribution_ratio(*evidence) + attribution_ratio(*turned) == pytest.approx(1.0)
    for k in range(3):  # more of any one piece of evidence for the mother: a larger share
        more = [0.2, 0.1, 0.1]
        more[k] += 0.5
        assert attribution_ratio(*more) > attribution_ratio(0.2, 0.1, 0.1)


def _held_together_measurements(needed: int) -> tuple[dict, dict[str, list[str]]]:
    """The swaps' per-item scores for a designed pair of three blocks (attn and ffn each).
    `reversal`, the mother's skill, works (1.0 an item) when at least `needed` of the four
    groups of her blocks 0 and 1 are in the model: with 1, one group grafted into the
    father carries it and one taken back from her costs nothing (only the graft sees it);
    with 2, no one-group swap sees it, only the span `blocks0-1`'s. `arithmetic`, the
    father's, loses 0.05 an item to each group of the mother's, additively. Each
    evaluation's items wobble a little on their own (a measurement's noise)."""
    groups = [f"block{b}.{kind}" for b in range(3) for kind in ("attn", "ffn")]
    spans = {"blocks0-1": [g for g in groups if g[5] in "01"]}
    evaluations = iter(range(1000))

    def scores(hers: set[str]) -> dict[str, list[float]]:
        salt = next(evaluations)
        wobble = [0.02 * math.sin(3.0 * i + 1.7 * salt) for i in range(24)]
        skill = float(len(hers & set(spans["blocks0-1"])) >= needed)
        return {"reversal": [skill + w for w in wobble],
                "arithmetic": [-0.05 * len(hers) + 0.5 * w for w in wobble]}

    every = set(groups)
    raw = {"father": scores(set()), "mother": scores(every), "midpoint": scores(every),
           "graft": {}, "revert": {}, "hits": {}}
    for unit in groups + list(spans):
        swapped = set(spans.get(unit, [unit]))
        raw["graft"][unit] = scores(swapped)
        raw["revert"][unit] = scores(every - swapped)
    return raw, spans


def test_a_skill_several_blocks_hold_together_is_found_by_both_swaps_and_the_spans():
    """A skill any one of several groups carries shows in the graft only, one that needs
    two of them in the span's swaps only; with both swaps and the span's excess, those
    groups go to the mother against the father's small, additive cost. Read from the
    revert alone (v2's rule), or without the span's excess, they lean to the father. The
    spans of six blocks are halves down to two blocks."""
    from types import SimpleNamespace

    from darwin_merge.scan.attribution import block_spans, group_evidence, summarise

    weights = {"reversal": 0.5, "arithmetic": 0.5}
    tasks = [SimpleNamespace(name=t, role="fitness", groups=range(24)) for t in weights]

    def ratios(needed, with_spans=True, side="attributed"):
        raw, spans = _held_together_measurements(needed)
        groups = {g: [g] for g in raw["graft"] if g not in spans}
        table = summarise(raw, groups, tasks, spans if with_spans else {})
        evidence = group_evidence(table, weights, list(groups), side)
        return {g: attribution_ratio(e["z"], 0.0, 0.0) for g, e in evidence.items()}

    held = ["block0.attn", "block0.ffn", "block1.attn", "block1.ffn"]
    for needed in (1, 2):
        seen = ratios(needed)
        assert all(seen[g] > 0.85 for g in held), (needed, seen)
        assert seen["block2.ffn"] < 0.5  # no part of the skill: the father's cost decides
    assert all(ratios(1, with_spans=False)[g] > 0.85 for g in held)  # the graft's half
    assert all(ratios(1, side="revert")[g] < 0.5 for g in held)
    assert all(ratios(2, with_spans=False)[g] < 0.5 for g in held)
    six = [f"block{b}.{k}" for b in range(6) for k in ("attn", "ffn")] + ["embed"]
    assert {s: len(m) for s, m in block_spans(six).items()} == {
        "blocks0-2": 6, "blocks0-1": 4, "blocks3-5": 6, "blocks3-4": 4}
    assert block_spans(six[:4] + ["embed"]) == {}


def test_with_a_base_the_cli_prints_which_parent_each_layer_goes_to(
        two_skill_pair, skill_tasks, small_probes, tmp_path, capsys):
    """With the base, the trio's layer-0 MLP (only the mother changed it, skill B) goes to
    her and its layer-1 MLP (only the father changed it, skill A) to him, and `darwin
    scan` says so in one line per run of layers (the scan-only child's plan)."""
    base, father, mother = two_skill_pair
    fitness = f"{skill_tasks['skill_a']}=1,{skill_tasks['skill_b']}=1"
    code = main(["scan", "--father", str(father), "--mother", str(mother), "--base", str(base),
                 "--out", str(tmp_path / "scan"), "--probes", str(small_probes),
                 "--fitness", fitness, "--attribution-items", "16"])
    printed = capsys.readouterr().out
    assert code == 0
    plan = dict(line.strip().split(": ", 1) for line in printed.splitlines()
                if line.startswith("  layer") or line.startswith("  outside"))
    assert "ffn mother" in plan["layer 0"] and "ffn father" in plan["layer 1"], printed
    ratios = load_scan(tmp_path / "scan").mri_ratios()
    assert ratios["model.layers.0.mlp.up_proj.weight"] > 0.85
    assert ratios["model.layers.1.mlp.up_proj.weight"] < 0.15


def test_a_scan_of_the_earlier_measurements_loads_with_its_ratios_and_says_so(
        trio_scan, tmp_path):
    """A scan.json written before the spans (measurements version 2) keeps its ratios
    (merge and search read them as they are) and its summary says which rule made them."""
    import json

    from darwin_merge.scan import summary_lines

    scan, out, _ = trio_scan
    record = json.loads((out / "scan.json").read_text())
    record["settings"]["attribution_measurements"] = 2
    (tmp_path / "scan.json").write_text(json.dumps(record))
    older = load_scan(tmp_path)
    assert older.mri_ratios() == scan.mri_ratios()
    assert any("measurements version 2" in line for line in summary_lines(older))
    assert not any("measurements version" in line for line in summary_lines(scan))
