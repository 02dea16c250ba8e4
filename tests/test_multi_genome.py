"""The N-parent genome (multi_genome.py, merge/multi_plan.py): genome rule v3 over N models.
TIES over three task vectors against a tensor computed by hand, which folding two-model
merges does not give; at N = 2 a v3 genome's child; shares, transplants and the file's
errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from darwin_merge.arch.rules import MergeMode
from darwin_merge.arch.taxonomy import TensorInfo
from darwin_merge.cli import main
from darwin_merge.errors import UsageError
from darwin_merge.genome import Genome
from darwin_merge.io import ModelSource as ModelSourceOf
from darwin_merge.merge.engine import ParentTensors, merge_state, merge_state_multi
from darwin_merge.merge.multi_plan import model_roles, plan_shares
from darwin_merge.merge.plan import MergeSettings
from darwin_merge.multi_genome import MultiGenome, ParentGenes, load_multi_genome

MATRIX = TensorInfo("model.layers.0.mlp.down_proj.weight", "ffn", 0, 0, "dare_ties")
NORM = TensorInfo("model.layers.0.input_layernorm.weight", "norm", 0, 0, "linear")


def crafted(values: list[list[float]]) -> dict[str, torch.Tensor]:
    return {MATRIX.name: torch.tensor(values, dtype=torch.float32)}


# base 0 everywhere, so each model's tensor is its task vector
BASE = crafted([[0.0, 0.0, 0.0, 0.0]])
TASK_VECTORS = {"model_1": crafted([[4.0, -1.0, 2.0, 0.5]]),
                "model_2": crafted([[-3.0, 2.0, -0.2, 1.0]]),
                "model_3": crafted([[-2.0, 3.0, 1.0, -4.0]])}


def test_ties_over_three_parents_is_the_hand_computed_tensor_not_a_fold_of_pairs():
    """TIES (density 0.5, lambda 1, the disjoint mean) over three task vectors, by hand:
    trimmed to their two largest magnitudes each: (4, 0, 2, 0), (-3, 2, 0, 0), (0, 3, 0, -4);
    sums (1, 5, 2, -4) elect (+, +, +, -); kept entries (4), (2, 3), (2), (-4) give the
    disjoint means (4, 2.5, 2, -4). Folding (TIES of the first two, then with the third)
    elects column 0 from (4 - 3) alone and gives another tensor."""
    genome = MultiGenome.task_vectors(3, scale=1.0, trim_density=0.5, sign_election=True,
                                      disjoint_mean=True)
    models = {**TASK_VECTORS, "base": BASE}
    child = merge_state_multi(models, model_roles(3), [MATRIX], genome)[MATRIX.name]
    assert torch.equal(child, torch.tensor([[4.0, 2.5, 2.0, -4.0]]))

    pair = MultiGenome.task_vectors(2, scale=1.0, trim_density=0.5, sign_election=True,
                                    disjoint_mean=True)
    first = merge_state_multi({"model_1": TASK_VECTORS["model_1"],
                               "model_2": TASK_VECTORS["model_2"], "base": BASE},
                              model_roles(2), [MATRIX], pair)
    folded = merge_state_multi({"model_1": first, "model_2": TASK_VECTORS["model_3"],
                                "base": BASE}, model_roles(2), [MATRIX], pair)[MATRIX.name]
    assert not torch.equal(folded, child)


def test_task_arithmetic_over_three_parents_adds_every_scaled_task_vector():
    genome = MultiGenome.task_vectors(3, scale=0.5)
    models = {**TASK_VECTORS, "base": BASE}
    child = merge_state_multi(models, model_roles(3), [MATRIX], genome)[MATRIX.name]
    assert torch.equal(child, torch.tensor([[-0.5, 2.0, 1.4, -1.25]]))


def test_shares_follow_the_pulls_and_a_dominant_parent_is_transplanted():
    """Pulls 0.6, 0.3, 0.1 share a tensor as they are (they sum to 1); pulls 0.9, 0.05,
    0.05 give the first parent its tensor whole; every pull 0 shares equally; a vector is
    merged without DARE's drop."""
    def genome(*pulls: float) -> MultiGenome:
        return MultiGenome(parents=tuple(ParentGenes(global_ratio=p, ffn_ratio=p,
                                                     block_0_ratio=p) for p in pulls))

    settings = MergeSettings()
    rows = plan_shares([MATRIX], {}, genome(0.6, 0.3, 0.1), settings)
    assert rows[0].mode == MergeMode.DARE_TIES and rows[0].taken is None
    assert rows[0].shares == pytest.approx((0.6, 0.3, 0.1))
    rows = plan_shares([MATRIX], {}, genome(0.9, 0.05, 0.05), settings)
    assert (rows[0].mode, rows[0].taken) == (MergeMode.TRANSPLANT_PARENT, 0)
    assert genome(0.0, 0.0, 0.0).shares(MATRIX) == pytest.approx((1 / 3,) * 3)
    assert genome(0.4, 0.4, 0.0).shares(MATRIX) == pytest.approx((0.5, 0.5, 0.0))
    child = merge_state_multi({**TASK_VECTORS, "base": BASE}, model_roles(3), [MATRIX],
                              genome(0.9, 0.05, 0.05))[MATRIX.name]
    assert torch.equal(child, TASK_VECTORS["model_1"][MATRIX.name])


def test_at_two_parents_the_rule_is_v3(tiny_trio):
    """A searched-looking v3 genome (ratios apart, DARE densities, a trim, both switches)
    and its N-parent reading make the same child, tensor by tensor, to float rounding, with
    the same tensors transplanted."""
    base, father, mother = tiny_trio
    genome = Genome(global_ratio=0.45, attn_ratio=0.7, ffn_ratio=0.3, embed_ratio=0.1,
                    block_0_ratio=0.9, block_3_ratio=0.2, density_a=0.8, density_b=0.6,
                    merge_method_weight=0.8, genome_rule="v3", scale_a=1.3, scale_b=0.7,
                    trim_density=0.7, sign_election=1.0, disjoint_mean=1.0)
    parents = ParentTensors.load(father, mother, base)
    pair = merge_state(parents, genome)
    multi = merge_state_multi({"father": parents.father, "mother": parents.mother,
                               "base": parents.base}, ("father", "mother"), parents.infos,
                              MultiGenome.from_pair(genome))
    assert set(multi) == set(pair)
    for name in pair:
        assert torch.allclose(multi[name], pair[name], rtol=1e-5, atol=1e-6), name
    father_tensors = load_file(Path(father) / "model.safetensors")
    taken = [n for n in pair if torch.equal(pair[n], father_tensors[n])]
    assert taken and all(torch.equal(multi[n], father_tensors[n]) for n in taken)


def test_a_genome_file_names_its_parents_or_is_refused(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(MultiGenome.task_vectors(3, scale=1.2, trim_density=0.5).to_yaml())
    assert load_multi_genome(good) == MultiGenome.task_vectors(3, scale=1.2, trim_density=0.5)
    flat = tmp_path / "flat.yaml"
    flat.write_text(Genome().to_yaml())
    with pytest.raises(UsageError, match="a `parents:` list"):
        load_multi_genome(flat)
    one = tmp_path / "one.yaml"
    one.write_text("parents:\n  - {scale: 1.0}\n")
    with pytest.raises(UsageError, match="parents"):
        load_multi_genome(one)
    big = tmp_path / "big.yaml"
    big.write_text("parents:\n  - {scale: 1.0}\n  - {scale: 2.5}\n")
    with pytest.raises(UsageError, match=r"parents\.1\.scale"):
        load_multi_genome(big)


@pytest.fixture(scope="module")
def tiny_four(tiny_trio, tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """(base, a, b, c): the tiny trio and a third fine-tune of its base."""
    from tiny_models import perturbed_copy

    base, a, b = tiny_trio
    return base, a, b, perturbed_copy(base, tmp_path_factory.mktemp("four") / "c", scale=0.3,
                                      seed=3)


def yaml_child(config: dict, folder: Path) -> dict:
    folder.mkdir()
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config))
    assert main(["merge", "--mergekit-config", str(path), "--out", str(folder / "child")]) == 0
    return load_file(folder / "child" / "model.safetensors")


def models_child(parents, base, genome: MultiGenome | None, folder: Path) -> dict:
    folder.mkdir()
    args = ["merge", *[a for p in parents for a in ("--model", str(p))], "--out",
            str(folder / "child")] + ([] if base is None else ["--base", str(base)])
    if genome is not None:
        (folder / "genome.yaml").write_text(genome.to_yaml())
        args += ["--genome", str(folder / "genome.yaml")]
    assert main(args) == 0
    return load_file(folder / "child" / "model.safetensors")


def three_model_config(method: str, parents, base, density: float | None = None) -> dict:
    parameters = {"weight": 1.0, **({} if density is None else {"density": density})}
    return {"merge_method": method, "base_model": str(base),
            "models": [{"model": str(p), "parameters": dict(parameters)} for p in parents],
            "parameters": {"lambda": 1.0}}


def test_model_three_times_is_the_three_model_mergekit_recipe(tiny_four, tmp_path):
    """`darwin merge --model x3 --base W` with no genome is task arithmetic at lambda 1 over
    the three task vectors, and with the TIES genome TIES over three: the children of the
    same recipes' mergekit YAML, bit for bit; darwin_merge.json names every parent."""
    base, *parents = tiny_four
    for name, genome, config in (
            ("ta", None, three_model_config("task_arithmetic", parents, base)),
            ("ties", MultiGenome.task_vectors(3, scale=1.0, trim_density=0.5,
                                              sign_election=True, disjoint_mean=True),
             three_model_config("ties", parents, base, density=0.5))):
        ours = models_child(parents, base, genome, tmp_path / f"{name}-models")
        theirs = yaml_child(config, tmp_path / f"{name}-yaml")
        assert set(ours) == set(theirs)
        assert not [n for n in ours if not torch.equal(ours[n], theirs[n])], name
    record = json.loads((tmp_path / "ties-models" / "child" / "darwin_merge.json").read_text())
    assert record["parents"]["models"] == [str(p) for p in parents]
    assert record["parents"]["base"] == str(base)
    assert len(record["parent_genes"]) == 3 and record["tensor_shares"][0]["shares"] == [
        pytest.approx(1 / 3)] * 3


def test_model_options_are_refused_in_one_line(tiny_four, tmp_path, capsys):
    base, a, b, c = tiny_four
    out = str(tmp_path / "child")
    two = tmp_path / "two.yaml"
    two.write_text(MultiGenome.task_vectors(2, scale=1.0).to_yaml())
    for args, message in (
            (["--model", str(a), "--father", str(b)], "--father: not used with --model"),
            (["--model", str(a)], "at least two --model"),
            (["--model", str(a), "--model", str(b), "--model", str(c), "--genome", str(two)],
             "genes for 2 parents and 3 --model"),
            (["--model", str(a), "--model", str(b), "--disjoint-mean"], "--disjoint-mean"),
            (["--model", str(a), "--model", str(b), "--transplant-low", "0.1"],
             "--transplant-low: not used with --model")):
        assert main(["merge", *args, "--out", out]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, args
    assert not Path(out).exists()


def test_plan_with_three_models_shows_each_parents_share(tiny_four, tmp_path, capsys):
    """`darwin plan --model x3 --genome G --json`: one row per tensor with three shares;
    a genome whose first parent pulls every MLP transplants them from model_1, as the merge
    does; without --father/--mother and without --model it names what is missing."""
    base, *parents = tiny_four
    genome = MultiGenome(parents=(ParentGenes(ffn_ratio=1.0), ParentGenes(ffn_ratio=0.0),
                                  ParentGenes(ffn_ratio=0.0)))
    path = tmp_path / "genome.yaml"
    path.write_text(genome.to_yaml())
    args = ["plan", *[a for p in parents for a in ("--model", str(p))], "--base", str(base),
            "--genome", str(path)]
    assert main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["tensors"]
    with ModelSourceOf(parents[0]) as source:
        assert [r["name"] for r in rows] == list(source.names)
    mlp = [r for r in rows if r["component"] == "ffn"]
    assert mlp and all(r["mode"] == "transplant_parent" and r["taken"] == 0 for r in mlp)
    assert all(len(r["shares"]) == 3 for r in rows)
    assert main(args) == 0
    assert f"transplant_parent (model_1) {len(mlp)}" in capsys.readouterr().out
    assert main(["plan", "--genome", str(path)]) == 2
    assert "missing --father, --mother (or give --model N times)" in capsys.readouterr().err


def test_a_three_model_merge_round_trips_through_mergekit_yaml(tiny_four, tmp_path, capsys):
    """`darwin export-mergekit CHILD` of a three-model merge writes a three-model YAML whose
    child (`--mergekit-config`) is the merge's: bit for bit for TIES with equal shares; to
    float rounding for per-block pulls and per-parent scales, every tensor's weights exact
    (the header says so). The genome file exports with --model; without it, one line."""
    base, *parents = tiny_four
    searched = MultiGenome(
        parents=(ParentGenes(scale=1.3, block_0_ratio=0.9, attn_ratio=0.7),
                 ParentGenes(scale=0.8, block_1_ratio=0.2),
                 ParentGenes(scale=1.0, ffn_ratio=0.6)),
        trim_density=0.6, sign_election=1.0, disjoint_mean=1.0)
    for name, genome, exact in (
            ("ties", MultiGenome.task_vectors(3, scale=1.1, trim_density=0.5,
                                              sign_election=True, disjoint_mean=True), True),
            ("searched", searched, False)):
        ours = models_child(parents, base, genome, tmp_path / name)
        exported = tmp_path / f"{name}.yaml"
        assert main(["export-mergekit", str(tmp_path / name / "child"), "--out",
                     str(exported)]) == 0
        text = exported.read_text()
        config = yaml.safe_load(text)
        assert config["merge_method"] == "ties" and len(config["models"]) == 3
        assert config["base_model"] == str(Path(base).resolve())
        total = sum(1 for line in text.splitlines() if "float tensors get" in line)
        assert total == 1 and "differ by" not in text
        theirs = yaml_child(config, tmp_path / f"{name}-back")
        for tensor in ours:
            if exact:
                assert torch.equal(ours[tensor], theirs[tensor]), tensor
            else:
                assert torch.allclose(ours[tensor], theirs[tensor], rtol=1e-5, atol=1e-6), tensor
    genome_file = tmp_path / "searched" / "genome.yaml"
    assert main(["export-mergekit", str(genome_file), *[a for p in parents
                                                         for a in ("--model", str(p))]]) == 0
    assert "merge_method: ties" in capsys.readouterr().out
    assert main(["export-mergekit", str(genome_file)]) == 2
    assert "give them with --model" in capsys.readouterr().err
    again = models_child(parents, base, load_multi_genome(
        tmp_path / "searched" / "child" / "darwin_merge.json"), tmp_path / "again")
    assert all(torch.equal(again[n], ours[n]) for n in ours)  # the record redoes the merge
    assert main(["card", str(tmp_path / "searched" / "child")]) == 2  # not a wrong card
    assert "does not describe N parents yet" in capsys.readouterr().err
    assert not (tmp_path / "searched" / "child" / "README.md").exists()
    assert main(["merge", "--father", str(parents[0]), "--mother", str(parents[1]),
                 "--genome", str(tmp_path / "searched" / "child" / "darwin_merge.json"),
                 "--out", str(tmp_path / "wrong")]) == 2
    assert "N-parent" in capsys.readouterr().err


def test_the_standard_recipes_merge_three_parents_in_memory(tiny_four):
    """StandardMerger over three parents by role (bench_trio's baselines): task arithmetic
    and TIES give the N-parent genome's child of the same recipe, tensor for tensor."""
    from darwin_merge.arch import Taxonomy
    from darwin_merge.mergekit.standard import StandardMerger, StandardRecipe

    base, *parents = tiny_four
    models = {role: load_file(Path(p) / "model.safetensors")
              for role, p in zip([*model_roles(3), "base"], [*parents, base], strict=True)}
    with ModelSourceOf(base) as source:
        infos, config = Taxonomy(source.config).classify_all(source.specs()), source.config
    merger = StandardMerger(models=models, infos=infos, config=config)
    for recipe, genome in (
            (StandardRecipe(method="task_arithmetic", scale=0.7),
             MultiGenome.task_vectors(3, scale=0.7)),
            (StandardRecipe(method="ties", scale=1.0, density=0.5),
             MultiGenome.task_vectors(3, scale=1.0, trim_density=0.5, sign_election=True,
                                      disjoint_mean=True))):
        theirs = merger.state(recipe)
        ours = merge_state_multi(models, model_roles(3), infos, genome)
        assert set(theirs) == set(ours)
        assert not [n for n in ours if not torch.equal(ours[n], theirs[n])], recipe.name
