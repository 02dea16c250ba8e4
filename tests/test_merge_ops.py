"""The merge's pure functions against hand-computed tensors, and the genome."""

from __future__ import annotations

import pytest
import torch

from darwin_merge.arch.taxonomy import TensorInfo
from darwin_merge.errors import UsageError
from darwin_merge.genome import Genome, genome_from_dict, genome_hash, genome_ratio, load_genome
from darwin_merge.merge.ops import (
    all_finite,
    blend,
    clip_bound,
    dare,
    dare_owned,
    dare_ties,
    kth_largest,
    linear,
    magnitude_trim,
    magnitude_trim_fast,
    merge_pair,
    ties_elect,
    ties_merge,
    ties_merge_pair,
)
from darwin_merge.merge.plan import MergeSettings, final_ratio, mode_of, transplant_mode


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# -- DARE ------------------------------------------------------------------------
def test_dare_density_one_keeps_everything_and_density_zero_drops_all():
    delta = t(1.0, -2.0, 3.0)
    assert torch.equal(dare(delta, 1.0, gen()), delta)
    assert torch.equal(dare(delta, 0.0, gen()), torch.zeros(3))


def test_dare_keeps_or_drops_each_entry_and_rescales_kept_by_one_over_density():
    delta = torch.arange(1.0, 1001.0)
    out = dare(delta, 0.25, gen(3))
    kept = out != 0
    assert torch.allclose(out[kept], delta[kept] / 0.25)
    assert 150 < int(kept.sum()) < 350  # about a quarter kept
    assert torch.equal(delta, torch.arange(1.0, 1001.0))  # input untouched


def test_dare_near_zero_density_keeps_almost_nothing_but_stays_finite():
    out = dare(torch.ones(10_000), 1e-4, gen(1))
    assert torch.isfinite(out).all()
    assert int((out != 0).sum()) <= 10
    assert torch.all((out == 0) | (out == 1e4))


def test_dare_all_zero_delta_stays_zero():
    assert torch.equal(dare(torch.zeros(50), 0.5, gen()), torch.zeros(50))


def test_dare_same_seed_same_mask_different_seed_different_mask():
    delta = torch.randn(500, generator=gen(9))
    assert torch.equal(dare(delta, 0.5, gen(1)), dare(delta, 0.5, gen(1)))
    assert not torch.equal(dare(delta, 0.5, gen(1)), dare(delta, 0.5, gen(2)))


@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_dare_is_unbiased(density):
    """E[dare(d)] = d, per entry: average many independent draws."""
    delta = t(2.0, -1.0, 0.5, 4.0)
    draws = torch.stack([dare(delta, density, gen(s)) for s in range(4000)])
    stderr = delta.abs() * ((1 - density) / density / 4000) ** 0.5
    assert torch.all((draws.mean(0) - delta).abs() < 4 * stderr + 1e-6)


# -- TIES ------------------------------------------------------------------------
def test_ties_elect_sign_of_weighted_sum_with_ties_electing_zero():
    elected = ties_elect([t(1.0, -2.0, 0.0, 1.0), t(2.0, 1.0, 0.0, -1.0)])
    assert torch.equal(elected, t(1.0, -1.0, 0.0, 0.0))


def test_a_tie_in_the_sign_election_elects_plus_the_mergekit_way():
    """Task vectors summing to exactly 0: darwin's own rule keeps neither, mergekit's rule
    (`sum >= 0` elects +) keeps the positive one, with the disjoint mean its full value; an
    all-zero entry keeps nothing under either."""
    a = torch.tensor([0.5, 0.0, 0.25])
    b = torch.tensor([-0.5, 0.0, 0.5])
    assert torch.equal(ties_merge([a, b], [1.0, 1.0], disjoint_mean=True),
                       torch.tensor([0.0, 0.0, 0.375]))
    assert torch.equal(ties_merge([a, b], [1.0, 1.0], disjoint_mean=True, tie_sign=1.0),
                       torch.tensor([0.5, 0.0, 0.375]))
    assert torch.equal(ties_elect([a, b], tie_sign=1.0), torch.tensor([1.0, 1.0, 1.0]))


def test_ties_merge_weighted_sum_of_agreeing_entries():
    d_a, d_b = t(1.0, -2.0, 3.0, 0.0, 2.0), t(2.0, 1.0, -3.0, 0.0, 0.0)
    # weighted: a = [.5, -1, 1.5, 0, 1], b = [1, .5, -1.5, 0, 0]; sum = [1.5, -.5, 0, 0, 1]
    # elected [1, -1, 0, 0, 1]; a agrees on 0, 1, 4; b on 0 only (zero agrees with nothing)
    merged = ties_merge([d_a, d_b], [0.5, 0.5])
    assert torch.equal(merged, t(1.5, -1.0, 0.0, 0.0, 1.0))


def test_ties_merge_disjoint_mean_divides_by_the_kept_weights():
    d_a, d_b = t(1.0, -2.0, 3.0, 0.0, 2.0), t(2.0, 1.0, -3.0, 0.0, 0.0)
    merged = ties_merge([d_a, d_b], [0.5, 0.5], disjoint_mean=True)
    # kept mass [1, .5, 0, 0, .5]: agreeing entries averaged, single ones get their full delta
    assert torch.equal(merged, t(1.5, -2.0, 0.0, 0.0, 2.0))


def test_ties_merge_uneven_weights_and_opposite_signs():
    # a = 0.2 * [1, 1] = [.2, .2]; b = 0.8 * [-1, 2] = [-.8, 1.6]
    merged = ties_merge([t(1.0, 1.0), t(-1.0, 2.0)], [0.2, 0.8])
    assert torch.allclose(merged, t(-0.8, 1.8))


def test_ties_merge_all_zero_deltas_give_zero():
    merged = ties_merge([torch.zeros(4), torch.zeros(4)], [0.3, 0.7], disjoint_mean=True)
    assert torch.equal(merged, torch.zeros(4))


# -- linear, blend, DARE-TIES, transplant, clip -----------------------------------
def test_linear_interpolates_with_the_mothers_share():
    assert torch.equal(linear(t(0.0, 2.0), t(4.0, 6.0), 0.25), t(1.0, 3.0))


def test_blend_weights_dare_ties_against_linear():
    assert torch.equal(blend(t(4.0), t(0.0), 0.25), t(1.0))
    assert torch.equal(blend(t(4.0), t(0.0), 1.0), t(4.0))
    assert torch.equal(blend(t(4.0), t(0.0), 0.0), t(0.0))


def test_dare_ties_without_base_and_full_density_is_linear():
    a, b = torch.randn(64, generator=gen(1)), torch.randn(64, generator=gen(2))
    out = dare_ties(a, b, None, 0.3, 1.0, 1.0, (gen(), gen()))
    assert torch.allclose(out, linear(a, b, 0.3), atol=1e-6)


def test_dare_ties_with_base_hand_computed():
    base, a, b = t(1.0, 1.0, 1.0), t(2.0, 0.0, 1.0), t(3.0, 3.0, 0.0)
    # d_a = [1, -1, 0], d_b = [2, 2, -1]; r = .5 -> weighted [.5,-.5,0], [1,1,-.5]
    # sum [1.5, .5, -.5] -> elected [1, 1, -1]; keep a: [T, F, F]; keep b: [T, T, T]
    out = dare_ties(a, b, base, 0.5, 1.0, 1.0, (gen(), gen()))
    assert torch.equal(out, t(2.5, 2.0, 0.5))


@pytest.mark.parametrize("with_base", [False, True])
@pytest.mark.parametrize("ratio, density_a, density_b, weight, disjoint", [
    (0.5, 1.0, 1.0, 1.0, False), (0.3, 0.7, 0.4, 1.0, False), (0.6, 0.9, 0.2, 0.35, False),
    (0.4, 0.5, 0.5, 0.0, False), (0.7, 0.6, 0.8, 0.5, True), (0.2, 0.0, 0.0, 0.8, False),
])
def test_fused_merge_equals_the_reference_composition(with_base, ratio, density_a, density_b,
                                                      weight, disjoint):
    """What the engine runs == blend(dare_ties(...), linear(...), w) from the spec functions."""
    a, b = torch.randn(3000, generator=gen(1)), torch.randn(3000, generator=gen(2))
    base = torch.randn(3000, generator=gen(3)) if with_base else None
    copies = [x.clone() for x in (a, b)]
    reference = blend(dare_ties(a, b, base, ratio, density_a, density_b, (gen(5), gen(6)),
                                disjoint), linear(a, b, ratio), weight)
    fused = merge_pair(a, b, base, ratio, density_a, density_b, weight, (gen(5), gen(6)),
                       disjoint)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(a, copies[0]) and torch.equal(b, copies[1])  # inputs untouched


@pytest.mark.parametrize("ratio", [0.0, 0.35, 1.0])
def test_a_parent_that_is_the_base_draws_nothing_and_merges_as_a_copy_would(ratio):
    """The tensor a fine-tune left as it was, passed as the base's own object: its zero
    task vector's generator is not drawn from, and the child has the bits of the same
    merge with an equal copy (the general path, election included)."""
    base, other = torch.randn(3000, generator=gen(3)), torch.randn(3000, generator=gen(4))
    base[:10], other[5:15] = -0.0, -other[5:15].abs()  # -0.0 where drops and base meet
    for father_is_base in (True, False):
        pair = (base, other) if father_is_base else (other, base)
        copies = tuple(t.clone() if t is base else t for t in pair)
        idle = gen(7)
        untouched = idle.get_state()
        generators = (idle, gen(8)) if father_is_base else (gen(8), idle)
        shared = merge_pair(*pair, base, ratio, 0.6, 0.6, 1.0, generators)
        assert torch.equal(idle.get_state(), untouched)
        general = merge_pair(*copies, base, ratio, 0.6, 0.6, 1.0, (gen(8), gen(8)))
        assert torch.equal(shared.view(torch.int32), general.view(torch.int32))


@pytest.mark.parametrize("density", [0.05, 0.3, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("rescale", [False, True])
def test_fast_magnitude_trim_keeps_the_entries_the_sorted_reference_keeps(density, rescale):
    """The selection (kthvalue) and the stable sort keep the same entries, also where many
    magnitudes tie at the threshold (values drawn from a few levels, both signs)."""
    generator = torch.Generator().manual_seed(3)
    tied = torch.randint(-4, 5, (37, 53), generator=generator).float() * 0.25
    smooth = torch.randn(64, 48, generator=generator)
    sparse = torch.where(torch.rand(64, 48, generator=generator) < 0.2, smooth, 0.0)
    for delta in (tied, smooth, sparse, torch.zeros(8, 8)):  # sparse: a threshold of 0
        fast = magnitude_trim_fast(delta, density, rescale)
        assert torch.equal(fast, magnitude_trim(delta, density, rescale))
        assert int((fast != 0).sum()) <= int(density * delta.numel())
    assert torch.equal(magnitude_trim_fast(tied, 1e-4), torch.zeros_like(tied))  # keeps 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_finite_finds_any_nan_or_inf_and_lets_bounds_be_infinite(dtype):
    clean = torch.randn(1000, generator=gen(1)).to(dtype)
    assert all_finite(clean) and all_finite(torch.zeros(0)) and all_finite(torch.arange(3))
    for bad, allowed_as_bound in ((float("nan"), False), (float("inf"), True),
                                  (float("-inf"), True)):
        tensor = clean.clone()
        tensor[617] = bad
        assert not all_finite(tensor)
        assert all_finite(tensor, allow_inf=True) == allowed_as_bound
    bounds = clean.clone()
    bounds[1], bounds[2] = float("inf"), float("-inf")  # no bound either way, no NaN
    assert all_finite(bounds, allow_inf=True) and not all_finite(bounds)
    bounds[3] = float("nan")
    assert not all_finite(bounds, allow_inf=True)


def test_dare_leaves_an_all_zero_delta_zero_without_a_draw():
    """A tensor the fine-tune left as it was costs no draw: the generator is where it was."""
    generator = gen(5)
    assert torch.equal(dare(torch.zeros(40, 30), 0.5, generator), torch.zeros(40, 30))
    assert torch.equal(torch.rand(10, generator=generator), torch.rand(10, generator=gen(5)))


def test_transplant_modes_and_thresholds():
    assert transplant_mode(0.1, 0.15, 0.85) == "transplant_father"
    assert transplant_mode(0.9, 0.15, 0.85) == "transplant_mother"
    assert transplant_mode(0.15, 0.15, 0.85) is None
    assert transplant_mode(0.85, 0.15, 0.85) is None


def test_clip_bounds_take_the_looser_bound_and_keep_infinity():
    inf = float("inf")
    assert torch.equal(clip_bound(t(-1.0, -inf), t(-2.0, -3.0), "clip_min"), t(-2.0, -inf))
    assert torch.equal(clip_bound(t(1.0, inf), t(2.0, 3.0), "clip_max"), t(2.0, inf))


def test_mode_of_exact_clip_and_transplant():
    s = MergeSettings()
    assert mode_of("exact", 0.5, s) == "exact"
    assert mode_of("clip_max", 0.5, s) == "clip_max"
    assert mode_of("dare_ties", 0.05, s) == "transplant_father"
    assert mode_of("linear", 0.95, s) == "transplant_mother"
    assert mode_of("linear", 0.95, MergeSettings(transplant_high=1.0)) == "linear"


def test_final_ratio_mixes_scan_and_genome_by_trust():
    assert final_ratio(0.2, None, 0.9) == 0.2
    assert final_ratio(0.2, 0.8, 0.25) == pytest.approx(0.8 * 0.25 + 0.2 * 0.75)


# -- genome ----------------------------------------------------------------------
def info(component: str, block: int | None) -> TensorInfo:
    return TensorInfo("x", component, None if block is None else block, block, "dare_ties")


def test_genome_rule_v1_blends_and_uniform_genome_gives_r_everywhere():
    g = Genome(global_ratio=0.5, attn_ratio=0.1, ffn_ratio=0.9, embed_ratio=0.7,
               block_2_ratio=0.3, genome_rule="v1")
    assert genome_ratio(g, info("attn", 2)) == pytest.approx(0.4 * 0.5 + 0.3 * 0.1 + 0.3 * 0.3)
    assert genome_ratio(g, info("moe", 0)) == pytest.approx(0.4 * 0.5 + 0.3 * 0.9 + 0.3 * 0.5)
    assert genome_ratio(g, info("embed", None)) == pytest.approx(0.2 + 0.21 + 0.15)
    assert genome_ratio(g, info("norm", None)) == pytest.approx(0.5)
    for rule in ("v1", "v2"):
        u = Genome.uniform(0.37).model_copy(update={"genome_rule": rule})
        for comp in ("attn", "ffn", "embed", "norm", "vision", "other", "moe",
                     "per_layer_embed"):
            for block in (None, 0, 5):
                assert genome_ratio(u, info(comp, block)) == 0.37


COMPONENTS_IN_LAYERS = ("attn", "ffn", "moe", "norm", "other")


@pytest.mark.parametrize("side", [0.0, 1.0])
def test_genome_rule_v2_one_component_field_alone_swaps_that_component(side):
    for field, components in (("attn_ratio", {"attn"}), ("ffn_ratio", {"ffn", "moe"})):
        g = Genome.uniform(side).model_copy(update={field: 1 - side})
        for block in range(6):
            for comp in COMPONENTS_IN_LAYERS:
                want = 1 - side if comp in components else side
                assert genome_ratio(g, info(comp, block)) == want, (field, comp, block)


@pytest.mark.parametrize("side", [0.0, 1.0])
def test_genome_rule_v2_one_block_field_alone_swaps_that_block(side):
    g = Genome.uniform(side).model_copy(update={"block_4_ratio": 1 - side})
    for block in range(6):
        for comp in COMPONENTS_IN_LAYERS:
            want = 1 - side if block == 4 else side
            assert genome_ratio(g, info(comp, block)) == want
    assert genome_ratio(g, info("embed", None)) == side  # outside the layers: untouched


def test_genome_rule_v2_tensors_outside_the_layers_follow_their_component_fully():
    mother_blocks = Genome.uniform(1.0).model_copy(update={"embed_ratio": 0.0})
    assert genome_ratio(mother_blocks, info("embed", None)) == 0.0  # v1 could not go below 0.7
    assert genome_ratio(mother_blocks, info("attn", 3)) == 1.0
    g = Genome(global_ratio=0.2, embed_ratio=0.65, block_0_ratio=0.9)
    assert genome_ratio(g, info("embed", None)) == 0.65
    assert genome_ratio(g, info("norm", None)) == 0.2  # the final norm: global_ratio


def test_genome_yaml_round_trip_and_card_order(tmp_path):
    g = Genome.from_values([0.4989, 0.1766, 0.9021, 0.6122, 0.9951, 0.9617, 0.5740, 0.5811,
                            0.5736, 0.4697, 0.4930, 0.8418, 0.4907, 0.3623])
    text = g.to_yaml()
    assert text.splitlines()[0].startswith("global_ratio: 0.4989")
    assert text.splitlines()[13].startswith("merge_method_weight: 0.3623")
    assert text.splitlines()[14].startswith("genome_rule: v2")
    path = tmp_path / "g.yaml"
    path.write_text(text)
    assert load_genome(path) == g and load_genome(path).genome_rule == "v2"
    path.write_text(g.model_copy(update={"genome_rule": "v1"}).to_yaml())
    assert load_genome(path).genome_rule == "v1"
    assert Genome(density_a=0.00001).to_yaml().count("density_a: 0.00001") == 1


def test_genome_missing_values_take_defaults(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("ffn_ratio: 0.9\n")
    g = load_genome(path)
    assert g.ffn_ratio == 0.9 and g.global_ratio == Genome().global_ratio
    assert g.genome_rule == "v1"  # a file without the rule was written for v1


@pytest.mark.parametrize("text, words", [
    ("colour_ratio: 0.5\n", "unknown genome key 'colour_ratio'"),
    ("attn_ratio: 1.5\n", "attn_ratio = 1.5 is outside [0, 1]"),
    ("attn_ratio: -0.1\n", "outside [0, 1]"),
    ("attn_ratio: high\n", "attn_ratio must be a number"),
    ("- 0.5\n", "maps names to numbers"),
    ("attn_ratio: [\n", "not valid YAML"),
    ("genome_rule: v4\n", "genome_rule must be one of v1, v2, v3, got 'v4'"),
])
def test_bad_genome_files_are_one_line_usage_errors(tmp_path, text, words):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=words.replace("[", r"\[").replace("]", r"\]")) as exc:
        load_genome(path)
    assert "\n" not in str(exc.value)


def test_genome_hash_is_stable_and_changes_with_genome_and_settings():
    g = Genome(attn_ratio=0.3)
    assert genome_hash(g, MergeSettings()) == genome_hash(Genome(attn_ratio=0.3000000001),
                                                          MergeSettings())
    assert genome_hash(g, MergeSettings()) != genome_hash(Genome(attn_ratio=0.31), MergeSettings())
    assert genome_hash(g, MergeSettings()) != genome_hash(g, MergeSettings(disjoint_mean=True))
    assert len(genome_hash(g)) == 16
    old = g.model_copy(update={"genome_rule": "v1"})
    assert genome_hash(old) != genome_hash(g)
    assert genome_hash(old) == "be58c30450bd2a9c"  # the hash the genome had before v2
    # pinned: a study resumed by a newer Darwin must find the genomes it already scored
    assert genome_hash(old, MergeSettings()) == "af0092f56ef8f7b9"  # v1, as before v2
    assert genome_hash(g, MergeSettings()) == "3ef4318b435debbe"  # v2
    assert genome_hash(Genome()) == "1d123b869ba05b3e"


def test_genome_values_round_trip_and_wrong_length():
    g = Genome(block_3_ratio=0.25)
    assert Genome.from_values(g.values()) == g
    with pytest.raises(UsageError):
        Genome.from_values([0.5] * 13)
    with pytest.raises(UsageError):
        genome_from_dict({"global_ratio": True})


def test_kth_largest_is_kthvalues_value_when_the_sample_brackets_it_and_when_it_misses():
    """Large tensors (above SELECT_WHOLE_BELOW, so the sample narrows the search): smooth,
    heavily tied, mostly zero, and one whose sampled positions are all huge (every bracket
    misses and the whole tensor is ranked); k from 1 to numel."""
    from darwin_merge.merge import ops

    generator = torch.Generator().manual_seed(5)
    n = 3 * ops.SELECT_WHOLE_BELOW + 7
    stride = n // ops.SAMPLE_SIZE | 1
    smooth = torch.randn(n, generator=generator).abs()
    tied = torch.randint(0, 4, (n,), generator=generator).float()
    sparse = torch.where(torch.rand(n, generator=generator) < 0.1, smooth, 0.0)
    biased = smooth.clone()
    biased[stride // 2::stride] = 1e6
    for values in (smooth, tied, sparse, biased):
        for k in (1, 2, n // 100, n // 3, n // 2, n - n // 10, n - 1, n):
            expected = torch.kthvalue(values, n - k + 1).values
            assert torch.equal(kth_largest(values, k), expected), k


@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.8, 1.3), (0.0, 2.0), (0.35, 0.65)])
@pytest.mark.parametrize("disjoint_mean", [False, True])
@pytest.mark.parametrize("tie_sign", [0.0, 1.0])
def test_the_fused_pair_election_equals_ties_merge(weights, disjoint_mean, tie_sign):
    """ties_merge_pair (what the executor runs for two task vectors) gives ties_merge's
    values, on deltas with exact ties (a + b == 0), zeros in one or both and DARE-dropped
    entries: the cases where an election or a disjoint mean could go another way."""
    a = torch.randn(4000, generator=gen(11))
    b = torch.randn(4000, generator=gen(12))
    b[:300] = -a[:300] * weights[0] / max(weights[1], 1e-9)  # weighted sums of exactly 0
    a[300:600], b[500:800] = 0.0, 0.0  # one side zero; both zero on 500..600
    a, b = dare(a, 0.6, gen(13)), dare(b, 0.6, gen(14))
    reference = ties_merge([a, b], list(weights), disjoint_mean=disjoint_mean,
                           tie_sign=tie_sign)
    fused = ties_merge_pair(a.clone(), b.clone(), weights, disjoint_mean, tie_sign)
    assert torch.equal(fused, reference)
    assert bool((reference != 0).any()) and bool((reference == 0).any())


@pytest.mark.parametrize("density", [0.0, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("rescale", [False, True])
def test_dare_in_place_keeps_the_same_entries_and_values(density, rescale):
    delta = torch.randn(3000, generator=gen(21))
    owned = dare_owned(delta.clone(), density, gen(22), rescale)
    assert torch.equal(owned, dare(delta, density, gen(22), rescale))
    assert torch.equal(dare_owned(torch.zeros(5), 0.5, gen(1)), torch.zeros(5))
