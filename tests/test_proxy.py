"""Phase 1's proxy from the scan's attribution (evolve/proxy_attribution.py), on scan
tables written the way `darwin scan` writes them: what it can predict that the first
proxy could not, the bend measured on the midpoint, and the metric link."""

from __future__ import annotations

import math

import numpy as np
import pytest

from darwin_merge.arch.taxonomy import TensorInfo
from darwin_merge.evolve import proxy_attribution as P
from darwin_merge.evolve.phase2 import anchor_genomes
from darwin_merge.genome import Genome
from darwin_merge.merge.plan import MergeSettings, plan_merge

INFOS = [TensorInfo("model.layers.0.self_attn.q_proj.weight", "attn", 0, 0, "dare_ties"),
         TensorInfo("model.layers.0.mlp.up_proj.weight", "ffn", 0, 0, "dare_ties"),
         TensorInfo("model.embed_tokens.weight", "embed", None, None, "dare_ties")]
SHAPES = {i.name: (4, 4) for i in INFOS}
DELTA = {i.name: 1.0 for i in INFOS}


def scan_task(effects: dict[str, float], father=-2.0, mother=-1.0, midpoint=None,
              grafts: dict[str, float] | None = None) -> dict:
    """One task of scan.json's `attribution.tasks` (graft = revert = the effect unless
    `grafts` says otherwise)."""
    grafts = {**effects, **(grafts or {})}
    task = {"role": "fitness", "n": 32, "scale": 1.0, "father": father, "mother": mother,
            "groups": {g: {"graft": grafts[g], "revert": e, "effect": (grafts[g] + e) / 2}
                       for g, e in effects.items()}}
    if midpoint is not None:
        task["midpoint"] = midpoint
    return task


def model_for(task: dict, metrics=(0.2, 0.6), context: str = "mother"
              ) -> tuple[P.AttributionModel, P.GroupIndex]:
    attribution = {"groups": {g: {} for g in task["groups"]}, "tasks": {"t": task},
                   "context": context}
    model = P.build_model(attribution, {"t": 1.0},
                          {"father": {"t": metrics[0]}, "mother": {"t": metrics[1]}})
    return model, P.group_index(INFOS, model, DELTA)


def predict(genome: Genome, model, index) -> float:
    return P.predicted_fitness(plan_merge(INFOS, SHAPES, genome, MergeSettings()), model, index)


def test_a_group_that_opposes_the_gap_lifts_a_child_above_both_parents():
    """The mother leads (+1), but her embeddings cost 0.3 of it: the mother with the
    father's embeddings is predicted above the mother, who is above the father."""
    task = scan_task({"block0.attn": 0.4, "block0.ffn": 0.9, "embed": -0.3})
    model, index = model_for(task)
    anchors = anchor_genomes()
    father, mother = (predict(Genome.uniform(r, merge_method_weight=0.0), model, index)
                      for r in (0.0, 1.0))
    swapped = predict(anchors["mother_but_embed_from_father"], model, index)
    assert swapped > mother > father
    assert father == pytest.approx(0.2) and mother == pytest.approx(0.6)


def test_the_swaps_that_add_up_to_the_gap_are_read_whichever_parent_is_preferred():
    """The mother's embeddings raise the father's skill when grafted (+0.5) but cost the
    mother nothing to give back (revert 0). The reverts add up to the gap (1.0), the
    grafts overshoot it (1.5): the reverts are read, so the mother with the father's
    embeddings keeps the mother's score, whichever parent the scan prefers."""
    task = scan_task({"block0.attn": 0.5, "block0.ffn": 0.5, "embed": 0.0},
                     grafts={"embed": 0.5})
    swapped = anchor_genomes()["mother_but_embed_from_father"]
    for context in ("mother", "father"):
        assert predict(swapped, *model_for(task, context=context)) == pytest.approx(0.6)


def test_a_skill_redundant_in_the_preferred_parent_is_read_in_the_other():
    """The specialists' case: each block carries the mother's skill whole, so taking one
    back from her changes nothing (reverts 0.05), while grafting the attention block alone
    into the father brings the whole gap. Read in the mother the proxy would say the blocks
    do not matter; read in the father (the grafts add up to the gap), the father with the
    mother's attention block is predicted at the mother's score, and with her FFN block
    alone at the father's."""
    task = scan_task({"block0.attn": 0.05, "block0.ffn": 0.05, "embed": 0.0},
                     grafts={"block0.attn": 1.0, "block0.ffn": 0.0})
    model, _ = model_for(task, context="mother")
    (fitness_task,) = model.tasks

    def child(**mother_groups) -> float:  # the mother's share of each group, 0 elsewhere
        shares = np.array([mother_groups.get(g.replace(".", "_"), 0.0) for g in model.groups])
        return P.predicted_metric(fitness_task, shares, float(shares.mean()))

    assert child(block0_attn=1.0) == pytest.approx(0.6)
    assert child(block0_ffn=1.0) == pytest.approx(0.2)


def test_the_halfway_child_is_predicted_at_the_midpoint_the_scan_measured():
    """The scan measured the halfway blend's score (father -2, mother -1): above the chord
    (-1.2: a blend keeps the better parent's edge), on it, or below it (-1.8). The proxy
    passes through that point: the halfway child's predicted metric is the link's metric
    at the measured midpoint, whichever it is; the parents stay at their own metrics.
    (Fails if the bend is scaled wrongly or ignored.)"""
    half, father, mother = (Genome.uniform(r, density=1.0, merge_method_weight=0.0)
                            for r in (0.5, 0.0, 1.0))
    effects = {"block0.attn": 0.4, "block0.ffn": 0.6, "embed": 0.0}
    for midpoint in (-1.2, -1.5, -1.8):
        model, index = model_for(scan_task(effects, midpoint=midpoint))
        link = model.tasks[0].link
        assert predict(half, model, index) == pytest.approx(link.metric(midpoint))
        assert predict(father, model, index) == pytest.approx(0.2)
        assert predict(mother, model, index) == pytest.approx(0.6)


def test_without_a_measured_midpoint_the_halfway_child_is_on_the_chord():
    """A scan made before the midpoint was measured: the halfway child is predicted at the
    link's metric of the parents' mean score (no bend either way)."""
    model, index = model_for(scan_task({"block0.attn": 0.5, "block0.ffn": 0.5, "embed": 0.0}))
    half = Genome.uniform(0.5, density=1.0, merge_method_weight=0.0)
    assert predict(half, model, index) == pytest.approx(model.tasks[0].link.metric(-1.5))


def test_the_link_is_fitted_on_the_scans_evaluations_where_it_counted_hits():
    """Points on a known logistic curve give back its slope; points that fall with the
    score are refused and the parents' link is used."""
    task = scan_task({"block0.attn": 0.5, "block0.ffn": 0.5, "embed": 0.0})
    scores = [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5]
    task["calibration"] = {"score": scores,
                           "metric": [1 / (1 + math.exp(-(1.0 + 2.0 * s))) for s in scores]}
    link = model_for(task)[0].tasks[0].link
    assert link.source == "scan"
    assert link.slope == pytest.approx(2.0, rel=1e-6) and link.intercept == pytest.approx(1.0)
    task["calibration"]["metric"] = list(reversed(task["calibration"]["metric"]))
    link = model_for(task)[0].tasks[0].link
    assert link.source == "parents"
    assert link.metric(-2.0) == pytest.approx(0.2) and link.metric(-1.0) == pytest.approx(0.6)


def test_parents_too_close_to_tell_borrow_the_slope_of_another_task():
    """A task whose parents' item scores differ by under a tenth of its spread takes the
    median slope (per unit of spread) of the tasks that can tell."""
    clear = scan_task({"block0.attn": 0.5, "block0.ffn": 0.5, "embed": 0.0})
    close = scan_task({"block0.attn": 0.01, "block0.ffn": 0.01, "embed": 0.0},
                      father=-1.0, mother=-0.98)
    attribution = {"groups": {g: {} for g in clear["groups"]},
                   "tasks": {"clear": clear, "close": close}, "context": "mother"}
    model = P.build_model(attribution, {"clear": 0.5, "close": 0.5},
                          {"father": {"clear": 0.2, "close": 0.5},
                           "mother": {"clear": 0.6, "close": 0.5}})
    by_name = {t.name: t for t in model.tasks}
    assert by_name["close"].link.slope == pytest.approx(by_name["clear"].link.slope)
    assert by_name["close"].weight == pytest.approx(0.5)
