"""Skill attribution: in which tensor groups each task's difference between the parents lives.

A *group* is one adaptive block x {attn, ffn, norm} inside the decoder layers, or one
kind of tensor outside them (embed, lm_head, final_norm, vision, ...). For every group
and every probe task the scan measures two swaps, on the same items:

- graft:  score(father with the group taken from the mother) - score(father)
- revert: score(mother) - score(mother with the group taken back from the father)

Both say how much the mother's version of the group is worth on that task, from either
side, and each misses a skill the other sees: a skill any one of several blocks can carry
shows in the graft only (taking one block back from the mother costs her nothing), a
skill that needs every one of its blocks in the revert only. So a group's evidence is
`effect = (graft + revert) / 2` per item. A skill that needs some but not all of its
blocks shows in neither: the same two swaps are made of *spans*, contiguous runs of
blocks (the blocks' halves, their halves, ... down to two blocks, `block_spans`), and
what a span's effect holds beyond the sum of its groups' effects (`excess`: the skill the
one-group swaps could not see) is shared equally among its groups (`attributed`). The
ratio reads the attributed effect (`group_evidence`). A task's item score is continuous
and follows accuracy: the choice-normalised log-probability of the gold answer for
multiple choice, the gold continuation's log-probability per character for
continuations, and a text's log-probability per character for the probe sets.

One more evaluation scores the *midpoint*, every tensor halfway between the parents: how
much a blend keeps beyond the straight line between them (the bend Phase 1's proxy needs;
evolve/proxy_attribution.py).

Costs `2 * (groups + spans) + 3` evaluations of the probe items (`evaluations` in scan.json);
nothing is merged and no model is written: the father's skeleton has each group's
tensors copied in and back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..arch.taxonomy import TensorInfo
from ..eval.evaluator import loglik_requests
from ..eval.loglik import Group, encode_groups, score_groups
from ..eval.tasks import Item, Task, resolve_tasks, select_items

LAYER_GROUP_KIND = {"attn": "attn", "ffn": "ffn", "moe": "ffn"}  # any other: "norm"
MC_KINDS = ("multiple_choice", "multiple_choice_gen")
# What the attribution measures (in the scan's settings, so its inputs hash): 2 adds the
# parents' midpoint (and the share of items answered right) to the swaps of version 1; 3
# the spans' swaps, and the ratio reads both swaps (version 2's read the preferred
# parent's only: a scan.json of version 2 keeps its ratios, `ratio_evidence`).
MEASUREMENTS_VERSION = 3


def group_of(info: TensorInfo) -> str:
    """`block3.attn`, `block0.norm`, or outside the layers `embed`, `lm_head`, `final_norm`."""
    if info.block is not None:
        return f"block{info.block}.{LAYER_GROUP_KIND.get(info.component, 'norm')}"
    if info.component == "embed" and "lm_head" in info.name:
        return "lm_head"
    if info.component == "norm":
        return "final_norm"
    return info.component


def tensor_groups(infos: list[TensorInfo]) -> dict[str, list[str]]:
    """Group name -> its tensors, groups in order (blocks first, then the rest)."""
    groups: dict[str, list[str]] = {}
    for info in infos:
        groups.setdefault(group_of(info), []).append(info.name)
    return dict(sorted(groups.items(), key=lambda kv: (not kv[0].startswith("block"), kv[0])))


def block_of(group: str) -> int | None:
    """The block index of `block3.ffn`; None for a group outside the blocks."""
    head = group.split(".", 1)[0]
    return int(head[5:]) if head.startswith("block") and head[5:].isdigit() else None


def block_spans(groups: list[str]) -> dict[str, list[str]]:
    """Span name (`blocks0-2`) -> its groups: the blocks split in halves (the first half
    the larger), each half in halves again, down to two blocks; the whole is not a span
    (its swaps are the parents themselves). Six blocks give 0-2, 0-1, 3-5, 3-4."""
    blocks = sorted({b for b in map(block_of, groups) if b is not None})
    spans: dict[str, list[str]] = {}

    def split(run: list[int]) -> None:
        middle = (len(run) + 1) // 2
        for half in (run[:middle], run[middle:]):
            if len(half) >= 2:
                spans[f"blocks{half[0]}-{half[-1]}"] = [g for g in groups
                                                        if block_of(g) in half]
                split(half)

    if len(blocks) >= 3:
        split(blocks)
    return spans


# -- probe items --------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeTask:
    """One task's items, encoded once: token groups, and how an item's score is read."""

    name: str
    role: str  # "fitness" or "probe"
    groups: tuple[Group, ...]
    golds: tuple[int | None, ...]  # gold choice for multiple choice, None otherwise
    chars: tuple[int, ...]  # per-character normaliser of continuations and texts
    counts_hits: bool = False  # the task's metric is `acc`, read off the same forward pass


def _task_requests(task: Task, docs: list[dict]) -> tuple[list, list, list]:
    """(context, continuations) per item, the gold choice and the gold's length in chars."""
    if task.kind in MC_KINDS:
        prompt = task.prompt if task.kind == "multiple_choice" else "{query}\nAnswer:"
        requests = [(prompt.format(**d), [" " + c for c in d["choices"]]) for d in docs]
        return requests, [d["gold"] for d in docs], [1] * len(docs)
    if task.kind == "gsm8k":  # the reference solution's likelihood (no generation here)
        requests = [(f"Question: {d['question']}\nAnswer:", [" " + d["answer"]]) for d in docs]
    else:
        requests = loglik_requests(task, [Item(i, d, "search") for i, d in enumerate(docs)])
    return requests, [None] * len(docs), [max(1, len(r[1][0].strip())) for r in requests]


def counts_hits(task: Task) -> bool:
    """Whether the scan can read the task's primary metric off its forward passes: `acc`
    of multiple choice (the most likely choice is the gold one), of a greedy continuation
    and of LAMBADA (the gold continuation is the greedy one)."""
    return task.metric == "acc" and task.kind in ("multiple_choice", "greedy_continuation",
                                                  "lambada")


def fitness_probe_tasks(tokenizer, names: list[str], limit: int) -> list[ProbeTask]:
    """The fitness tasks' first `limit` items of the `search` split (never `holdout`)."""
    tasks = []
    for task in resolve_tasks(names) if names else []:
        docs = [it.doc for it in select_items(task, "search", limit)]
        requests, golds, chars = _task_requests(task, docs)
        tasks.append(ProbeTask(task.name, "fitness", tuple(encode_groups(tokenizer, requests)),
                               tuple(golds), tuple(chars), counts_hits(task)))
    return tasks


def text_probe_tasks(tokenizer, probes: dict[str, list[str]]) -> list[ProbeTask]:
    """The card's probe sets as language-modelling tasks (log-probability of each text)."""
    tasks = []
    for name, texts in probes.items():
        groups = encode_groups(tokenizer, [("", [t]) for t in texts])
        tasks.append(ProbeTask(name, "probe", tuple(groups), (None,) * len(texts),
                               tuple(max(1, len(t)) for t in texts)))
    return tasks


def probe_items_signature(tasks: list[ProbeTask]) -> list:
    """What the attribution's items are, token for token (hashed into the scan's inputs)."""
    return [[t.name, t.role, [[list(g.context), [list(c) for c in g.continuations]]
                              for g in t.groups], list(t.golds)] for t in tasks]


def item_scores(model, task: ProbeTask, batch_size: int, pad_id: int
                ) -> tuple[list[float], list[float]]:
    """One continuous score per item (higher is better, see the module docstring) and
    whether the item is answered right (the `acc` the evaluator would count)."""
    scores = score_groups(model, list(task.groups), batch_size, None, pad_id)
    values, hits = [], []
    for gold, chars, item in zip(task.golds, task.chars, scores, strict=True):
        logprobs = [s.logprob for s in item]
        if gold is None:
            values.append(logprobs[0] / chars)
            hits.append(float(item[0].is_greedy))
        else:
            values.append(logprobs[gold] - torch.logsumexp(torch.tensor(logprobs), 0).item())
            hits.append(float(max(range(len(logprobs)), key=logprobs.__getitem__) == gold))
    return values, hits


# -- the swaps ------------------------------------------------------------------------
def _copy_in(model_state: dict, source: dict, names: list[str]) -> None:
    with torch.no_grad():
        for name in names:
            model_state[name].copy_(source[name])


def _blend_in(model_state: dict, father: dict, mother: dict, names: list[str]) -> None:
    """Every floating tensor halfway between the parents (others: the father's)."""
    with torch.no_grad():
        for name in names:
            a, b = father[name], mother[name]
            model_state[name].copy_(a + 0.5 * (b - a) if a.is_floating_point() else a)


def measure(model, father: dict, mother: dict, groups: dict[str, list[str]],
            tasks: list[ProbeTask], batch_size: int, pad_id: int,
            on_step: Callable[[], None] | None = None) -> dict:
    """Per-item scores of both parents, their midpoint and every graft and revert of a
    unit (`groups`: the tensor groups, then the spans, each a list of tensors) (raw
    measurements), and per evaluation the share of items answered right (`hits`, for the
    tasks whose metric is read off the forward pass)."""
    state = model.state_dict()
    every = list(dict.fromkeys(n for names in groups.values() for n in names))
    hits: dict[str, dict[str, float]] = {}

    def scored(label: str) -> dict[str, list[float]]:
        result = {}
        for task in tasks:
            result[task.name], task_hits = item_scores(model, task, batch_size, pad_id)
            if task.counts_hits:
                hits.setdefault(task.name, {})[label] = _mean(task_hits)
        if on_step is not None:
            on_step()
        return result

    _blend_in(state, father, mother, every)
    raw = {"midpoint": scored("midpoint"), "graft": {}, "revert": {}, "hits": hits}
    _copy_in(state, father, every)
    raw["father"] = scored("father")
    for group, names in groups.items():
        _copy_in(state, mother, names)
        raw["graft"][group] = scored(f"graft:{group}")
        _copy_in(state, father, names)
    _copy_in(state, mother, every)
    raw["mother"] = scored("mother")
    for group, names in groups.items():
        _copy_in(state, father, names)
        raw["revert"][group] = scored(f"revert:{group}")
        _copy_in(state, mother, names)
    _copy_in(state, father, every)  # leave the skeleton as it was loaded
    return raw


def calibration(raw: dict, task: str) -> dict[str, list[float]]:
    """Per evaluation of the scan (parents, midpoint, every swap), the mean item score and
    the share of items answered right: how the task's `acc` follows its item score, along
    the task's own range (Phase 1's proxy fits its link on these points)."""
    scores = {"midpoint": raw["midpoint"], "father": raw["father"], "mother": raw["mother"],
              **{f"graft:{g}": v for g, v in raw["graft"].items()},
              **{f"revert:{g}": v for g, v in raw["revert"].items()}}
    labels = list(raw["hits"][task])
    return {"score": [_mean(scores[label][task]) for label in labels],
            "metric": [raw["hits"][task][label] for label in labels]}


# -- from measurements to effects -----------------------------------------------------
def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _sd(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def item_changes(raw: dict, group: str, task: str) -> dict[str, list[float]]:
    """Per item, for one group (or span) and task: graft, revert and their mean (the
    effect)."""
    graft = [g - f for g, f in zip(raw["graft"][group][task], raw["father"][task], strict=True)]
    revert = [m - r for m, r in zip(raw["mother"][task], raw["revert"][group][task], strict=True)]
    effect = [(g + r) / 2 for g, r in zip(graft, revert, strict=True)]
    return {"graft": graft, "revert": revert, "effect": effect}


def span_excess(raw: dict, span: str, members: list[str], task: str) -> list[float]:
    """Per item: the span's effect less the sum of its groups' effects (what the one-group
    swaps could not see: 0 where the groups' effects add up)."""
    total = item_changes(raw, span, task)["effect"]
    for group in members:
        total = [t - e for t, e in zip(total, item_changes(raw, group, task)["effect"],
                                       strict=True)]
    return total


def attributed_changes(raw: dict, groups: list[str], spans: dict[str, list[str]],
                       task: str) -> dict[str, list[float]]:
    """Per group, per item: its effect plus an equal share of the excess of every span
    it is in (see the module docstring)."""
    attributed = {g: item_changes(raw, g, task)["effect"] for g in groups}
    for span, members in spans.items():
        share = [x / len(members) for x in span_excess(raw, span, members, task)]
        for group in members:
            attributed[group] = [a + x for a, x in zip(attributed[group], share, strict=True)]
    return attributed


def task_scale(raw: dict, task: str) -> float:
    """The spread of a task's item scores (pooled over both parents): its unit of effect."""
    pooled = math.sqrt((_sd(raw["father"][task]) ** 2 + _sd(raw["mother"][task]) ** 2) / 2)
    return pooled if pooled > 0 else 1.0


def _se(values: list[float]) -> float:
    return _sd(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def _means(changes: dict[str, list[float]]) -> dict[str, float]:
    """Each change's mean over the items and its standard error (`<key>_se`)."""
    return {**{key: _mean(values) for key, values in changes.items()},
            **{f"{key}_se": _se(values) for key, values in changes.items()}}


def summarise(raw: dict, groups: dict[str, list[str]], tasks: list[ProbeTask],
              spans: dict[str, list[str]] | None = None) -> dict:
    """scan.json's `attribution.tasks`: per task the means of both parents and of their
    midpoint, the scale, per group the graft, revert, effect and attributed effect, and per
    span (`spans`: span -> its groups) the graft, revert, effect and excess, all in the
    task's own units, each with its standard error."""
    spans = spans or {}
    table = {}
    for task in tasks:
        name = task.name
        attributed = attributed_changes(raw, list(groups), spans, name)
        per_group = {group: _means({**item_changes(raw, group, name),
                                    "attributed": attributed[group]}) for group in groups}
        per_span = {span: _means({**item_changes(raw, span, name),
                                  "excess": span_excess(raw, span, members, name)})
                    for span, members in spans.items()}
        table[name] = {"role": task.role, "n": len(task.groups), "scale": task_scale(raw, name),
                       "father": _mean(raw["father"][name]), "mother": _mean(raw["mother"][name]),
                       "midpoint": _mean(raw["midpoint"][name]), "groups": per_group,
                       "spans": per_span}
        if name in raw["hits"]:
            table[name]["calibration"] = calibration(raw, name)
    return table


def preferred_parent(table: dict, weights: dict[str, float]) -> str:
    """The parent the weighted, standardised probe scores prefer (the mother on a tie)."""
    gap = sum(w * (table[t]["mother"] - table[t]["father"]) / table[t]["scale"]
              for t, w in weights.items())
    return "mother" if gap >= 0 else "father"


def group_evidence(table: dict, weights: dict[str, float], groups: list[str],
                   side: str = "attributed") -> dict[str, dict]:
    """Per group: the weighted, standardised benefit of the mother's version, read from
    `side` of the task table: the attributed effect (both swaps, and the spans' excess;
    see the module docstring). benefit = sum_t w_t * change_t / scale_t;
    se = sqrt(sum_t (w_t * se_t / scale_t)^2); z = benefit / se (0 when nothing differs).
    Weights are normalised to sum to 1.
    """
    total = sum(weights.values())
    evidence = {}
    for group in groups:
        benefit, variance = 0.0, 0.0
        for task, weight in weights.items():
            row, scale = table[task]["groups"][group], table[task]["scale"]
            benefit += weight / total * row[side] / scale
            variance += (weight / total * row[f"{side}_se"] / scale) ** 2
        se = math.sqrt(variance)
        evidence[group] = {"benefit": benefit, "se": se,
                           "z": benefit / se if se > 0 else 0.0}
    return evidence


# -- task vectors ---------------------------------------------------------------------
def _norm(tensor: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(tensor.double()))


def task_vector_stats(father: dict, mother: dict, base: dict | None) -> dict[str, dict]:
    """Per float tensor: the size of the mother's change from the father relative to the
    father (`rel_change`), and with a base, each parent's distance from it and
    `ownership = (|B - W| - |A - W|) / (|B - W| + |A - W|)` (+1: only the mother moved it)."""
    stats = {}
    for name, a in father.items():
        if not a.is_floating_point():
            continue
        b = mother[name]
        size = _norm(a)
        entry = {"rel_change": _norm(b.double() - a.double()) / size if size > 0 else 0.0}
        if base is not None:
            w = base[name].double()
            da, db = _norm(a.double() - w), _norm(b.double() - w)
            entry.update(delta_a=da, delta_b=db,
                         ownership=(db - da) / (db + da) if da + db > 0 else 0.0)
        stats[name] = entry
    return stats
