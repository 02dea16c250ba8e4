"""The merge engine end to end on tiny models: identities, reproducibility, families, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from darwin_merge.cli import main
from darwin_merge.errors import (
    IncompatibleModelsError,
    NumericalError,
    OutputError,
    ResourceError,
    UsageError,
)
from darwin_merge.genome import Genome, genome_hash, load_genome
from darwin_merge.io import ModelSource
from darwin_merge.merge import (
    MergeSettings,
    ParentTensors,
    merge_models,
    merge_state,
    plan_models,
)
from darwin_merge.merge.execute import dare_generator
from darwin_merge.merge.ops import dare
from skills import skill_scores
from tiny_models import build_model, make_tiny, perturbed_copy, save_model


def weights(folder: Path) -> dict[str, torch.Tensor]:
    with ModelSource(folder) as source:
        return {n: source.get(n) for n in source.names}


def weight_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.safetensors"))}


@pytest.fixture(scope="module")
def pair(tiny_dir) -> tuple[Path, Path]:
    father = make_tiny("llama", tiny_dir / "merge-father", seed=0)
    return father, perturbed_copy(father, tiny_dir / "merge-mother", scale=0.5, seed=3)


def test_all_zero_genome_gives_the_father_and_all_ones_the_mother(pair, tmp_path):
    father, mother = pair
    zero = merge_models(father, mother, tmp_path / "zero", genome=Genome.from_values([0] * 14),
                        progress=False)
    one = merge_models(father, mother, tmp_path / "one", genome=Genome.from_values([1] * 14),
                       progress=False)
    for child, parent in ((zero, father), (one, mother)):
        got, want = weights(child), weights(parent)
        assert got.keys() == want.keys()
        assert all(torch.equal(got[n], want[n]) for n in want)
    report = json.loads((zero / "darwin_merge.json").read_text())
    assert set(report["modes"]) == {"transplant_father"}


def test_base_equal_to_father_gives_father_plus_r_dare_of_the_difference(pair, tmp_path):
    father, mother = pair
    genome = Genome.uniform(0.4, density=0.6, merge_method_weight=1.0)
    settings = MergeSettings()
    child = weights(merge_models(father, mother, tmp_path / "c", base=father, genome=genome,
                                 settings=settings, progress=False))
    a, b = weights(father), weights(mother)
    key = genome_hash(genome, settings)
    name = "model.layers.1.mlp.up_proj.weight"
    expected = a[name] + dare(b[name] - a[name], 0.6, dare_generator(key, name, "mother")) * 0.4
    torch.testing.assert_close(child[name], expected, rtol=0, atol=1e-6)
    dropped = (child[name] == a[name]).float().mean().item()
    assert 0.3 < dropped < 0.5  # about 1 - density of the entries keep the father's value


def test_rerun_is_byte_identical_across_thread_counts_and_genome_changes_it(pair, tmp_path):
    father, mother = pair
    genome = Genome(density_a=0.5, density_b=0.7)
    threads = torch.get_num_threads()
    one = merge_models(father, mother, tmp_path / "one", genome=genome, progress=False,
                       threads=1)
    two = merge_models(father, mother, tmp_path / "two", genome=genome, progress=False,
                       threads=2, chunk_elements=1000)
    assert torch.get_num_threads() == threads  # restored
    assert weight_bytes(one) == weight_bytes(two)
    other = merge_models(father, mother, tmp_path / "other", genome=Genome(density_b=0.71),
                         progress=False)
    assert weight_bytes(other) != weight_bytes(one)
    hashes = [json.loads((p / "darwin_merge.json").read_text())["genome_hash"]
              for p in (one, two, other)]
    assert hashes[0] == hashes[1] != hashes[2]


def test_report_records_every_tensor_and_says_the_genome_alone_decided(pair, tmp_path):
    father, mother = pair
    child = merge_models(father, mother, tmp_path / "c", genome=Genome(attn_ratio=0.05),
                         progress=False)
    report = json.loads((child / "darwin_merge.json").read_text())
    with ModelSource(father) as source:
        assert [r["name"] for r in report["tensors"]] == source.names
    assert report["ratio_source"] == "genome only (no scan given)"
    assert report["parents"]["father"] == str(father)
    attn = [r for r in report["tensors"] if r["component"] == "attn"]
    assert attn and all(r["genome_ratio"] == 0.05 and r["mode"] == "transplant_father"
                        for r in attn)  # genome rule v2: attn_ratio alone decides
    assert {"tokenizer.json", "chat_template.jinja", "config.json"} <= \
        {p.name for p in child.iterdir()}


def test_scan_ratios_enter_by_trust_and_missing_tensors_are_refused(pair, tmp_path):
    """A scan.json that `darwin scan` wrote, its ratios then edited: they enter the plan by
    the genome's trust; a file missing a tensor, with a ratio outside [0, 1] or without the
    per-layer table is refused, naming what is wrong."""
    from darwin_merge.scan import run_scan

    father, mother = pair
    run_scan(father, mother, tmp_path / "scan", formula="card", max_prompts=1, max_tokens=8,
             progress=False)
    scan = tmp_path / "scan" / "scan.json"
    written = json.loads(scan.read_text())
    names = list(written["tensors"])

    def edited(change) -> Path:
        data = json.loads(json.dumps(written))
        change(data)
        scan.write_text(json.dumps(data))
        return scan

    def all_at(value):
        return lambda data: [t.update(mri_ratio=value) for t in data["tensors"].values()]

    rows = plan_models(father, mother, genome=Genome.uniform(0.5, mri_trust=0.5),
                       scan=edited(all_at(0.9)))
    assert all(r.mri_ratio == 0.9 and r.final_ratio == pytest.approx(0.7) for r in rows)
    with pytest.raises(UsageError, match=names[0]):
        plan_models(father, mother, scan=edited(lambda data: data["tensors"].pop(names[0])))
    with pytest.raises(UsageError, match="mri_ratio in"):
        plan_models(father, mother, scan=edited(
            lambda data: data["tensors"][names[1]].update(mri_ratio=1.5)))
    with pytest.raises(UsageError, match="per-layer table"):
        plan_models(father, mother, scan=edited(lambda data: data["layers"].update(mother=[])))


def test_in_memory_merge_equals_the_written_child(pair, tmp_path):
    father, mother = pair
    genome = Genome(density_a=0.8, density_b=0.6, attn_ratio=0.1, ffn_ratio=0.95)
    written = weights(merge_models(father, mother, tmp_path / "c", genome=genome,
                                   progress=False, chunk_elements=777))  # many chunks
    state = merge_state(ParentTensors.load(father, mother), genome)
    assert state.keys() == written.keys()
    assert all(torch.equal(state[n], written[n]) for n in written)


def edited_copy(source: Path, folder: Path, edit) -> Path:
    """A copy of a model folder whose weights `edit(state)` changed in place."""
    from safetensors.torch import save_file

    folder.mkdir()
    for f in source.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", {"format": "pt"})
    return folder


def test_tensors_a_fine_tune_left_as_they_were_are_shared_and_merge_to_the_same_bits(
        pair, tmp_path):
    """ParentTensors keeps one copy of a tensor equal to the base's to the bit (the demo's
    disjoint specialists leave half their tensors so), and the fused merge skips that zero
    task vector's draw and election: the child is the streamed one (chunks, nothing
    shared), to the bit, -0.0 included. `minus_zero` is -0.0 in the base and the father and
    -0.5 in the mother (dropped entries give -0.0 + -0.0 unless the merge turns the delta's
    -0.0 into +0.0, as the election does); `signed_zero` is 0.0 in the mother: equal to the
    base's -0.0, not the same bits, so not shared."""
    minus_zero, signed_zero = ("model.layers.2.mlp.up_proj.weight",
                               "model.layers.2.mlp.down_proj.weight")

    def base_edit(state):
        for name in (minus_zero, signed_zero):
            state[name] = -torch.zeros_like(state[name])

    def layer_edit(layer, seed, mother=False):
        def edit(state):
            base_edit(state)
            noise = torch.Generator().manual_seed(seed)
            for name in [n for n in state if f".layers.{layer}." in n]:
                state[name] = state[name] + torch.randn(state[name].shape, generator=noise)
            if mother:
                state[minus_zero] = torch.full_like(state[minus_zero], -0.5)
                state[signed_zero] = torch.zeros_like(state[signed_zero])
        return edit

    base = edited_copy(pair[0], tmp_path / "base", base_edit)
    father = edited_copy(pair[0], tmp_path / "father", layer_edit(0, seed=1))
    mother = edited_copy(pair[0], tmp_path / "mother", layer_edit(1, seed=2, mother=True))
    parents = ParentTensors.load(father, mother, base)

    def shared(parent):
        return {n for n, tensor in parent.items() if tensor is parents.base[n]}

    assert minus_zero in shared(parents.father) and signed_zero in shared(parents.father)
    assert minus_zero not in shared(parents.mother) and signed_zero not in shared(parents.mother)
    assert not any(".layers.0." in n for n in shared(parents.father))
    assert any(".layers.0." in n for n in shared(parents.mother))
    pure = Genome(density_a=0.7, density_b=0.4, merge_method_weight=1.0)
    blended = Genome(density_a=0.5, density_b=0.8, merge_method_weight=0.6, attn_ratio=0.3)
    for genome in (pure, blended):
        streamed = weights(merge_models(father, mother, tmp_path / genome_hash(genome),
                                        base=base, genome=genome, progress=False,
                                        chunk_elements=777))
        in_memory = merge_state(parents, genome)
        assert all(torch.equal(in_memory[n].view(torch.int32), streamed[n].view(torch.int32))
                   for n in streamed)
        if genome is pure:  # minus_zero's dropped entries are +0.0 (a blend has none)
            assert streamed[minus_zero].view(torch.int32).eq(0).any()


def test_every_tiny_family_merges_loads_and_runs(tiny_model, tmp_path):
    from darwin_merge.io.loading import load_model

    family, father = tiny_model
    mother = perturbed_copy(father, tmp_path / "mother", scale=0.2)
    child = merge_models(father, mother, tmp_path / "child", genome=Genome(density_b=0.7),
                         progress=False)
    assert weights(child).keys() == weights(father).keys()
    model = load_model(child)
    ids = torch.tensor([[1, 10, 20, 30, 40, 50]])
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=True).logits
    assert logits.shape[-1] == 128 and torch.isfinite(logits).all()
    report = json.loads((child / "darwin_merge.json").read_text())
    modes = set(report["modes"])
    assert "dare_ties" in modes and "linear" in modes
    if family.startswith("gemma4"):
        assert {"clip_min", "clip_max"} <= modes  # the audio tower's clipping buffers


def test_bfloat16_child_and_parents(pair, tmp_path):
    father, mother = pair
    child = merge_models(father, mother, tmp_path / "c", dtype="bfloat16", progress=False)
    assert all(t.dtype == torch.bfloat16 for t in weights(child).values())
    assert json.loads((child / "config.json").read_text())["dtype"] == "bfloat16"
    again = merge_models(child, child, tmp_path / "again", progress=False)
    assert all(t.dtype == torch.bfloat16 for t in weights(again).values())


def test_two_skill_merge_keeps_both_skills(two_skill_pair, tmp_path):
    """A per-layer merge of the two fine-tunes (the mother's layer 0, the father's layer 1,
    with their base) keeps much of both skills; a uniform 0.5 merge halves each one-layer
    change and keeps neither (the trio's design, demo/tiny.py)."""
    from darwin_merge.evolve.phase2 import anchor_genomes

    base, father, mother = two_skill_pair
    child = merge_models(father, mother, tmp_path / "child", base=base,
                         genome=anchor_genomes()["mother_below_father_above"], progress=False)
    uniform = merge_models(father, mother, tmp_path / "uniform", base=base,
                           genome=Genome.uniform(0.5, density=0.9), progress=False)
    scores = {name: skill_scores(p) for name, p in
              (("father", father), ("mother", mother), ("child", child),
               ("uniform", uniform))}
    assert scores["father"]["skill_a"] > 0.9 and scores["mother"]["skill_b"] > 0.9
    worst = {name: min(s.values()) for name, s in scores.items()}
    assert worst["child"] > 0.3
    assert worst["child"] > 3 * max(worst["father"], worst["mother"], worst["uniform"])


# -- bad input ---------------------------------------------------------------------
def test_one_tokenizer_different_row_counts_are_aligned(tiny_dir, tmp_path):
    from transformers import LlamaConfig

    father = make_tiny("llama", tiny_dir / "vocab-a")
    config = LlamaConfig(vocab_size=160, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=32, tie_word_embeddings=True)
    from transformers import AutoModelForCausalLM

    mother = save_model(AutoModelForCausalLM.from_config(config), tmp_path / "vocab-b")
    child = merge_models(father, mother, tmp_path / "child", progress=False)
    rows = {who: load_file(str(folder / "model.safetensors"))["model.embed_tokens.weight"]
            for who, folder in (("father", father), ("mother", mother), ("child", child))}
    assert rows["child"].shape == (160, 64)  # the union keeps the mother's extra rows
    assert torch.equal(rows["child"][128:], rows["mother"][128:])
    assert not torch.equal(rows["child"][:100], rows["father"][:100])


def test_different_depth_and_architecture_are_refused(tiny_dir, tmp_path):
    father = make_tiny("llama", tiny_dir / "arch-a")
    deeper = save_model(build_model("llama", n_layers=6), tmp_path / "deeper")
    gemma = make_tiny("gemma3", tmp_path / "gemma")
    with pytest.raises(IncompatibleModelsError, match="only in the mother"):
        merge_models(father, deeper, tmp_path / "c", progress=False)
    with pytest.raises(IncompatibleModelsError, match="different architectures"):
        merge_models(father, gemma, tmp_path / "c", progress=False)


def test_nan_in_a_parent_is_refused_and_nothing_is_written(pair, tmp_path):
    from safetensors.torch import save_file

    father, mother = pair
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in mother.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    state = load_file(broken / "model.safetensors")
    state["model.layers.2.self_attn.q_proj.weight"][0, 0] = float("nan")
    save_file(state, broken / "model.safetensors", {"format": "pt"})
    with pytest.raises(NumericalError, match="model.layers.2.self_attn.q_proj.weight.*mother"):
        merge_models(father, broken, tmp_path / "child", progress=False)
    assert not (tmp_path / "child").exists()
    assert not list(tmp_path.glob(".child*"))


def test_existing_output_needs_overwrite(pair, tmp_path):
    father, mother = pair
    out = tmp_path / "child"
    out.mkdir()
    with pytest.raises(OutputError, match="--overwrite"):
        merge_models(father, mother, out, progress=False)
    merge_models(father, mother, out, overwrite=True, progress=False)
    assert (out / "darwin_merge.json").is_file()
    with pytest.raises(UsageError, match="one of the parents"):
        merge_models(father, mother, father, overwrite=True, progress=False)


def test_not_enough_disk_is_refused_before_writing(pair, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    father, mother = pair
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**6, 10**6, 1000))
    with pytest.raises(ResourceError, match="not enough disk"):
        merge_models(father, mother, tmp_path / "child", progress=False)
    assert not (tmp_path / "child").exists()


# A published (v1) genome: the one tests/run_fixture.py carried at commit 1d5284a.
PUBLISHED_GENOME = {
    "global_ratio": 0.4989, "attn_ratio": 0.1766, "ffn_ratio": 0.9021, "embed_ratio": 0.6122,
    "density_a": 0.9951, "density_b": 0.9617, "block_0_ratio": 0.574, "block_1_ratio": 0.5811,
    "block_2_ratio": 0.5736, "block_3_ratio": 0.4697, "block_4_ratio": 0.493,
    "block_5_ratio": 0.8418, "mri_trust": 0.4907, "merge_method_weight": 0.3623,
}
# sha256 of the child's safetensors bytes, merged from `pair` with that genome by the code
# before genome rule v2 (commit 1d5284a): a published genome keeps its child.
V1_CHILD_SHA256 = "442021939f0e979ddb949d55442a533794726c5087203d7921e606d4e4684697"


def test_a_genome_file_without_a_rule_makes_the_child_it_made_before(pair, tmp_path):
    father, mother = pair
    old_file = tmp_path / "published.yaml"
    old_file.write_text("".join(f"{k}: {v}\n" for k, v in PUBLISHED_GENOME.items()))
    child = merge_models(father, mother, tmp_path / "v1", genome=load_genome(old_file),
                         progress=False)
    digest = hashlib.sha256(b"".join(weight_bytes(child).values())).hexdigest()
    assert digest == V1_CHILD_SHA256
    report = json.loads((child / "darwin_merge.json").read_text())
    assert report["genome_rule"] == report["genome"]["genome_rule"] == "v1"
    again = merge_models(father, mother, tmp_path / "again", progress=False,
                         genome=load_genome(child / "darwin_merge.json"))
    assert weight_bytes(again) == weight_bytes(child)
    v2 = merge_models(father, mother, tmp_path / "v2", genome=Genome(**PUBLISHED_GENOME),
                      progress=False)
    assert weight_bytes(v2) != weight_bytes(child)
    assert json.loads((v2 / "darwin_merge.json").read_text())["genome_rule"] == "v2"


def test_cli_merge_plan_and_errors(pair, tmp_path, capsys):
    father, mother = pair
    genome = tmp_path / "g.yaml"
    low = Genome.uniform(0.1)  # attention 0: transplanted; ffn 0.5: merged
    genome.write_text(low.model_copy(update={"ffn_ratio": 0.5, "attn_ratio": 0.0}).to_yaml())
    args = ["--father", str(father), "--mother", str(mother), "--genome", str(genome)]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert {r["mode"] for r in plan["tensors"]} >= {"transplant_father", "dare_ties"}
    assert main(["plan", *args, "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("name,component") and len(lines) == len(plan["tensors"]) + 1
    assert main(["merge", *args, "--out", str(tmp_path / "c"), "--shard-size", "50KB"]) == 0
    assert len(list((tmp_path / "c").glob("model-*.safetensors"))) > 1
    whole = merge_models(father, mother, tmp_path / "whole", genome=load_genome(genome),
                         progress=False)
    sharded, single = weights(tmp_path / "c"), weights(whole)
    assert sharded.keys() == single.keys()
    assert all(torch.equal(sharded[n], single[n]) for n in single)
    from darwin_merge.io.loading import load_model

    assert load_model(tmp_path / "c") is not None  # transformers reads the index
    assert main(["merge", *args, "--out", str(tmp_path / "c")]) == OutputError.exit_code
    genome.write_text("attn_ratio: 7\n")
    assert main(["plan", *args]) == UsageError.exit_code
    assert "attn_ratio = 7" in capsys.readouterr().err
    assert main(["plan", "--father", str(father), "--mother", str(mother),
                 "--transplant-low", "0.9", "--transplant-high", "0.1"]) == UsageError.exit_code


def test_disk_full_while_writing_leaves_nothing(pair, tmp_path, monkeypatch):
    import errno

    from darwin_merge.io import stream

    father, mother = pair

    def full(self, name, chunk):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stream.StreamingWriter, "write", full)
    with pytest.raises(OutputError, match="not enough disk space"):
        merge_models(father, mother, tmp_path / "child", progress=False)
    assert list(tmp_path.iterdir()) == []
