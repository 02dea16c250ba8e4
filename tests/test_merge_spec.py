"""The merge description (merge/spec.py) and its one executor (merge/execute.py): darwin's
pair runs a fused kernel that gives the reference form's numbers, a task-vector merge of
three models matches a hand computation, every genome's plan compiles to steps the
executor streams chunk by chunk, and a mergekit YAML's child is the spec's."""

from __future__ import annotations

import pytest
import torch

from darwin_merge.genome import Genome, genome_hash
from darwin_merge.merge import ParentTensors, plan_merge
from darwin_merge.merge.execute import merge_in_memory, merge_step, reference_form
from darwin_merge.merge.plan import MergeSettings, spec_of_plan
from darwin_merge.merge.spec import Contribution, MergeSpec, StepKind, TensorStep, Trim


def pair_step(with_base: bool, ratio: float, share: float, mean: bool) -> TensorStep:
    return TensorStep(name="w", kind=StepKind.TASK_VECTORS, shape=(64, 48),
                      base="base" if with_base else None,
                      contributions=(Contribution("father", 1.0 - ratio, 0.7, Trim.DARE),
                                     Contribution("mother", ratio, 0.4, Trim.DARE)),
                      sign_election=True, mean=mean, task_vector_share=share)


@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("share,mean", [(1.0, False), (0.6, False), (1.0, True)])
def test_the_fused_pair_gives_the_reference_forms_numbers(with_base, share, mean):
    gen = torch.Generator().manual_seed(3)
    tensors = {m: torch.randn(64, 48, generator=gen) for m in ("father", "mother", "base")}
    step = pair_step(with_base, 0.35, share, mean)
    models = ("father", "mother") + (("base",) if with_base else ())
    spec = MergeSpec(models=models, reference="father", steps=(step,), seed="k")
    held = {m: tensors[m] for m in models}
    assert step.is_pair and step.elementwise
    fused = merge_step(spec, step, held)
    reference = reference_form(spec, step, held)
    # the same masks and weights: equal to float rounding, and far from a plain average
    assert torch.allclose(fused, reference, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(fused, (held["father"] + held["mother"]) / 2, atol=1e-2)


def test_three_models_sign_election_by_hand():
    """Task vectors [1, -2, 3], [2, 1, -1], [-4, 1, 1] over a zero base: the weighted sums
    are -1, 0, 3, so the election keeps -4 (entry 0), nothing or the two +1s (entry 1: a
    tie, elected 0 by darwin, + by mergekit), and 3 and 1 (entry 2)."""
    tensors = {"base": torch.zeros(3), "a": torch.tensor([1.0, -2.0, 3.0]),
               "b": torch.tensor([2.0, 1.0, -1.0]), "c": torch.tensor([-4.0, 1.0, 1.0])}

    def child(**options) -> torch.Tensor:
        step = TensorStep(name="w", kind=StepKind.TASK_VECTORS, shape=(3,), base="base",
                          contributions=tuple(Contribution(m) for m in "abc"),
                          sign_election=True, **options)
        spec = MergeSpec(models=("base", "a", "b", "c"), reference="base", steps=(step,),
                         seed="k")
        assert not step.is_pair and not step.elementwise
        return merge_in_memory(spec, lambda model, name: tensors[model])["w"]

    assert torch.equal(child(), torch.tensor([-4.0, 0.0, 4.0]))
    assert torch.equal(child(mean=True), torch.tensor([-4.0, 0.0, 2.0]))
    assert torch.equal(child(tie_sign=1.0), torch.tensor([-4.0, 2.0, 4.0]))
    assert torch.equal(child(scale=0.5), torch.tensor([-2.0, 0.0, 2.0]))


def test_three_models_task_arithmetic_and_magnitude_trim():
    base = torch.tensor([1.0, 1.0, 1.0, 1.0])
    tensors = {"base": base, "a": base + torch.tensor([4.0, -1.0, 0.5, 0.0]),
               "b": base + torch.tensor([0.0, 2.0, -3.0, 1.0]),
               "c": base + torch.tensor([1.0, 1.0, 1.0, 1.0])}
    weights = {"a": 1.0, "b": -0.5, "c": 0.25}

    def child(trim: Trim, density: float) -> torch.Tensor:
        step = TensorStep(name="w", kind=StepKind.TASK_VECTORS, shape=(4,), base="base",
                          scale=2.0, rescale=False, contributions=tuple(
                              Contribution(m, w, density, trim) for m, w in weights.items()))
        spec = MergeSpec(models=("base", "a", "b", "c"), reference="base", steps=(step,),
                         seed="k")
        return merge_in_memory(spec, lambda model, name: tensors[model])["w"]

    summed = sum(w * (tensors[m] - base) for m, w in weights.items())
    assert torch.equal(child(Trim.NONE, 1.0), base + 2.0 * summed)
    # density 0.5 keeps each task vector's two largest magnitudes (c: the first two, ties
    # broken by position)
    kept = (1.0 * torch.tensor([4.0, -1.0, 0.0, 0.0]) - 0.5 * torch.tensor([0.0, 2.0, -3.0, 0.0])
            + 0.25 * torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert torch.equal(child(Trim.MAGNITUDE, 0.5), base + 2.0 * kept)


def test_every_row_of_a_genomes_plan_compiles_to_an_elementwise_step(tiny_trio):
    """The streaming merge of a genome reads chunks, never whole tensors (peak memory a few
    chunks): every plan row's step is elementwise, its DARE-TIES rows the fused pair."""
    base, father, mother = tiny_trio
    held = ParentTensors.load(father, mother, base)
    genome = Genome(attn_ratio=0.05, density_a=0.6, merge_method_weight=0.7)
    settings = MergeSettings()
    rows = plan_merge(held.infos, held.shapes(), genome, settings)
    spec = spec_of_plan(rows, genome, settings, genome_hash(genome, settings), with_base=True)
    kinds = {step.kind for step in spec.steps}
    assert {StepKind.TASK_VECTORS, StepKind.TAKE, StepKind.INTERPOLATE} <= kinds
    assert all(step.elementwise for step in spec.steps)
    assert all(step.is_pair for step in spec.steps if step.kind is StepKind.TASK_VECTORS)
    assert [s.name for s in spec.steps] == [r.name for r in rows]  # none dropped
