"""Genome rule v3 (genome.py, merge/plan.py): the standard recipes are points of the genome.
A v3 genome of task arithmetic (any scale) or TIES makes, through `darwin merge --genome`,
the very child that `darwin merge --mergekit-config` makes of the recipe's YAML, with a
base and without; the v3 genes are refused in older genomes, a v2 genome read under v3
keeps its ratios, and each v3 gene changes the child."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from darwin_merge.cli import main
from darwin_merge.errors import UsageError
from darwin_merge.genome import GENES, V3_GENES, Genome, genome_from_dict, genome_hash
from darwin_merge.merge.engine import ParentTensors, merge_state
from darwin_merge.mergekit import merge_from_config
from darwin_merge.mergekit.standard import StandardMerger, StandardRecipe

POINTS = [StandardRecipe(method="task_arithmetic", scale=1.3),
          StandardRecipe(method="task_arithmetic", scale=0.7),
          StandardRecipe(method="task_arithmetic", scale=2.0),
          StandardRecipe(method="ties", scale=1.0, density=0.5),
          StandardRecipe(method="ties", scale=1.25, density=0.3)]


def child_of_yaml(point: StandardRecipe, father, mother, base, folder: Path) -> dict:
    folder.mkdir()
    config = folder / "config.yml"
    config.write_text(yaml.safe_dump(point.mergekit_dict(
        str(father), str(mother), base=None if base is None else str(base))))
    merge_from_config(config, folder / "child", progress=False)
    return load_file(folder / "child" / "model.safetensors")


def child_of_genome(genome: Genome, father, mother, base, folder: Path) -> dict:
    folder.mkdir()
    path = folder / "genome.yaml"
    path.write_text(genome.to_yaml())
    args = ["merge", "--father", str(father), "--mother", str(mother), "--genome", str(path),
            "--out", str(folder / "child")]
    assert main(args + ([] if base is None else ["--base", str(base)])) == 0
    return load_file(folder / "child" / "model.safetensors")


@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.name)
def test_a_standard_recipe_as_a_v3_genome_is_its_mergekit_child(tiny_trio, tmp_path, point,
                                                                 with_base):
    base, father, mother = tiny_trio
    base = base if with_base else None
    theirs = child_of_yaml(point, father, mother, base, tmp_path / "yaml")
    ours = child_of_genome(point.genome(), father, mother, base, tmp_path / "genome")
    assert set(ours) == set(theirs)
    differ = [n for n in ours if not torch.equal(ours[n], theirs[n])]
    assert not differ, differ[:3]
    moved = [n for n in ours if not torch.equal(ours[n], load_file(
        Path(father) / "model.safetensors")[n])]
    assert moved  # the recipe did something: the equality is not two copies of the father


def test_each_v3_gene_changes_the_child(tiny_trio, tmp_path):
    """From TIES d0.5 (both switches on), moving one v3 gene at a time moves the child."""
    base, father, mother = tiny_trio
    start = StandardRecipe(method="ties", scale=1.0, density=0.5).genome()
    reference = child_of_genome(start, father, mother, base, tmp_path / "start")
    moves = {"scale_a": 1.4, "scale_b": 0.6, "trim_density": 0.9, "sign_election": 0.0,
             "disjoint_mean": 0.0}
    assert set(moves) == set(V3_GENES)
    for gene, value in moves.items():
        moved = child_of_genome(start.model_copy(update={gene: value}), father, mother, base,
                                tmp_path / gene)
        assert any(not torch.equal(moved[n], reference[n]) for n in moved), gene


def test_v3_genes_belong_to_v3_genomes_only():
    with pytest.raises(UsageError, match="scale_a is a gene of genome rule v3 only"):
        genome_from_dict({"genome_rule": "v2", "scale_a": 1.0})
    with pytest.raises(UsageError, match=r"scale_b = 2.5 is outside \[0, 2\]"):
        genome_from_dict({"genome_rule": "v3", "scale_b": 2.5})
    with pytest.raises(UsageError, match=r"global_ratio = 1.5 is outside \[0, 1\]"):
        genome_from_dict({"genome_rule": "v3", "global_ratio": 1.5})
    # a v3 file that leaves a v3 gene out reads it as v2's arithmetic
    partial = genome_from_dict({"genome_rule": "v3", "scale_b": 1.5})
    assert (partial.scale_a, partial.scale_b, partial.sign_election) == (0.5, 1.5, 1.0)


def test_a_v2_genome_keeps_its_dump_and_hash_and_reads_the_same_under_v3():
    v2 = Genome(global_ratio=0.3, block_2_ratio=0.8)
    assert set(v2.model_dump()) == {*GENES, "genome_rule"}  # no v3 keys in its records
    assert len(v2.values()) == 14
    v3 = v2.as_v3()
    assert v3.values()[:14] == v2.values() and len(v3.values()) == 19
    assert genome_hash(v3) != genome_hash(v2)
    assert Genome(**v3.model_dump()) == v3
    assert Genome.from_values(v3.values(), "v3") == v3
    with pytest.raises(UsageError, match="only a v2 genome"):
        Genome(genome_rule="v1").as_v3()


def test_a_v3_genome_refuses_the_disjoint_mean_option(tiny_trio, tmp_path, capsys):
    base, father, mother = tiny_trio
    path = tmp_path / "genome.yaml"
    path.write_text(Genome().as_v3().to_yaml())
    assert main(["merge", "--father", str(father), "--mother", str(mother), "--base",
                 str(base), "--genome", str(path), "--disjoint-mean",
                 "--out", str(tmp_path / "child")]) == 2
    assert "gene disjoint_mean decides" in capsys.readouterr().err
    assert not (tmp_path / "child").exists()


def exported_child(genome: Genome, father, mother, base, folder: Path) -> tuple[dict, str]:
    """`darwin export-mergekit` of a v3 genome, then `darwin merge --mergekit-config` of it."""
    folder.mkdir()
    (folder / "genome.yaml").write_text(genome.to_yaml())
    exported = folder / "exported.yml"
    args = ["export-mergekit", str(folder / "genome.yaml"), "--father", str(father),
            "--mother", str(mother), "--out", str(exported)]
    assert main(args + ([] if base is None else ["--base", str(base)])) == 0
    merge_from_config(exported, folder / "child", progress=False)
    return load_file(folder / "child" / "model.safetensors"), exported.read_text()


@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("point", [POINTS[0], POINTS[4]], ids=lambda p: p.name)
def test_the_export_of_a_standard_recipes_v3_genome_makes_its_child(tiny_trio, tmp_path,
                                                                    point, with_base):
    base, father, mother = tiny_trio
    base = base if with_base else None
    ours = child_of_genome(point.genome(), father, mother, base, tmp_path / "genome")
    theirs, text = exported_child(point.genome(), father, mother, base, tmp_path / "export")
    assert yaml.safe_load(text)["merge_method"] == point.method
    assert not [n for n in ours if not torch.equal(ours[n], theirs[n])]


def test_the_export_of_a_searched_v3_genome_gives_every_tensor_its_weights(tiny_trio,
                                                                          tmp_path):
    """Per-block ratios, unequal scales, no sign election (task arithmetic): every tensor's
    two weights carried (the header counts them), the child the same to float rounding;
    a trim that task arithmetic cannot write is named in the header."""
    base, father, mother = tiny_trio
    genome = Genome.task_vectors(1.0).model_copy(update={
        "scale_a": 1.6, "scale_b": 0.5, "block_1_ratio": 0.7, "attn_ratio": 0.35,
        "density_a": 1.0, "density_b": 1.0})
    ours = child_of_genome(genome, father, mother, base, tmp_path / "genome")
    theirs, text = exported_child(genome, father, mother, base, tmp_path / "export")
    config = yaml.safe_load(text)
    assert config["merge_method"] == "task_arithmetic" and config["parameters"]["lambda"] == 1.6
    counted = [line for line in text.splitlines() if "float tensors get" in line][0]
    total = counted.split(" of ")[1].split()[0]
    assert counted.startswith(f"# {total} of {total} float tensors get darwin's exact weights")
    for name in ours:
        torch.testing.assert_close(theirs[name], ours[name], rtol=1e-5, atol=1e-6)
    trimmed = genome.model_copy(update={"trim_density": 0.6})
    _, text = exported_child(trimmed, father, mother, base, tmp_path / "trimmed")
    assert "the magnitude trim (trim_density 0.6): task_arithmetic has none" in text


def test_a_dare_ties_points_genome_drops_what_its_tuning_dropped(tiny_trio):
    """In the search a tuned DARE-TIES point (StandardMerger) and its v3 genome (the seed
    the search queues) draw their masks from one seed: every matrix is the same to the bit
    (vectors: v3 drops none), and a lower density's mask is a subset of a higher one's."""
    base, father, mother = tiny_trio
    parents = ParentTensors.load(father, mother, base)
    merger = StandardMerger(parents)
    point = StandardRecipe(method="dare_ties", scale=1.0, density=0.5)
    tuned = merger.state(point)
    ours = merge_state(parents, point.genome())
    matrices = [n for n, t in ours.items() if t.ndim == 2 and not torch.equal(
        t, parents.father[n])]
    assert matrices  # the merge moved them: the comparison is not of two fathers
    differ = [n for n in matrices if not torch.equal(ours[n], tuned[n])]
    assert not differ, differ[:3]
    sparser = StandardRecipe(method="dare_ties", scale=1.0, density=0.3)
    name = "model.layers.0.mlp.up_proj.weight"
    kept_half = ours[name] != parents.base[name]
    kept_less = merge_state(parents, sparser.genome())[name] != parents.base[name]
    assert kept_less.sum() < kept_half.sum()
    assert not (kept_less & ~kept_half).any()  # nested: no entry kept at 0.3 dropped at 0.5
