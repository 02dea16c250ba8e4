"""Health check: the child against both parents, layer by layer and probe set by probe set.

One traced forward pass per model per probe batch (the scan's `trace_decoder`) gives
every layer's hidden state and the logits. From them, per layer and probe set: the
cosine similarity of the child's hidden states to the father's and to the mother's,
and of the parents to each other; per probe set: each model's next-token loss on the
probe texts. The rules (docs/HEALTH.md):

- interference at layer l: the child's hidden states lie off the arc between the
  parents' (angles averaged over tokens, prompts and probe sets; the distance to the
  nearer parent when the child is not between them) by more than `interference_ratio`
  * min(angle(f, m), each parent's own spread) + `interference_margin`. A child between
  its parents (or equal to one) is on the arc; the allowance stops growing with the
  parents' difference once it reaches how far apart a parent's own states lie.
- function loss on a probe set: child loss > the loss its place between the parents
  predicts (the better parent's where it sits at the better parent) + `loss_margin`;
  judged only where a parent reads the set better than a uniform guess over the vocabulary
  (ln V nats per token): on text neither parent models there is no function to lose.
  With a base (the parents' common ancestor, `base=`), the reference is the larger of that
  and the base's loss plus each parent's own change over the base (its cost, or its gain):
  a child that keeps both fine-tunes may pay both of their costs, and must keep their gains.
- non-finite weights or activations anywhere.

Verdict: `unhealthy` on non-finite values or function loss; `warning` on interference
only; `healthy` otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import Progress

from ..errors import IncompatibleModelsError, UsageError
from ..io import ModelSource
from ..io.loading import load_model, load_tokenizer
from ..merge.ops import all_finite
from ..progress import progress_bar
from ..scan import probes as P
from ..scan.layers import decoder_of, trace_decoder

ROLES = ("child", "father", "mother")
BASE = "base"  # the parents' common ancestor: measured beside them for the loss reference
_CLIP_SUFFIXES = ("input_min", "input_max", "output_min", "output_max")


@dataclass(frozen=True)
class HealthThresholds:
    """The rules' knobs (CLI options of `darwin health`)."""

    interference_ratio: float = 0.65  # of min(parents' angle, parents' own spreads)
    interference_margin: float = 0.02  # radians
    loss_margin: float = 0.1  # nats per token

    def __post_init__(self):
        if self.interference_ratio < 0 or self.interference_margin < 0 or self.loss_margin < 0:
            raise UsageError("health thresholds must be >= 0")


# -- non-finite values ------------------------------------------------------

def _nonfinite(name: str, tensor: torch.Tensor) -> bool:
    if not tensor.is_floating_point():
        return False
    if name.endswith(_CLIP_SUFFIXES):  # +-Inf means "no clipping" there; NaN never does
        return bool(torch.isnan(tensor).any())
    return not all_finite(tensor)


def nonfinite_weights(model_or_path) -> list[str]:
    """Names of tensors holding NaN (or Inf outside clipping bounds)."""
    if isinstance(model_or_path, torch.nn.Module):
        return sorted(n for n, t in model_or_path.state_dict().items() if _nonfinite(n, t))
    with ModelSource(model_or_path) as source:
        return [n for n in source.names if _nonfinite(n, source.get(n))]


# -- per-batch measurements -------------------------------------------------

def token_loss_sum(logits: torch.Tensor, ids: torch.Tensor,
                   mask: torch.Tensor) -> tuple[float, int]:
    """(sum of next-token cross-entropies, number of predicted tokens) over real tokens."""
    valid = (mask[:, 1:] * mask[:, :-1]).bool()
    predicted = logits[:, :-1][valid].float()  # only real positions: padding costs nothing
    loss = F.cross_entropy(predicted, ids[:, 1:][valid], reduction="sum")
    return float(loss), int(valid.sum())


def token_similarity(x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt, over its real tokens: (mean cosine similarity, mean angle in radians).

    float64, so that the angle of nearly identical states is not float32 noise. Angles
    obey the triangle inequality token by token, hence also on their means.
    """
    cos = F.cosine_similarity(x.double(), y.to(x.device).double(), dim=-1, eps=1e-12)
    angle = torch.arccos(cos.clamp(-1.0, 1.0))
    weight = mask.to(x.device, torch.float64)
    count = weight.sum(dim=-1).clamp_min(1.0)
    return (cos * weight).sum(dim=-1) / count, (angle * weight).sum(dim=-1) / count


def spread_angle(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per prompt: the mean angle between its real tokens' states and their centroid over
    the batch (a parent's own spread: how far apart its states lie at this layer)."""
    weight = mask.to(states.device, torch.float64)
    x = states.double()
    centroid = (x * weight[..., None]).sum(dim=(0, 1)) / weight.sum().clamp_min(1.0)
    _, angle = token_similarity(x, centroid.expand_as(x), mask)
    return angle


PAIRS = {"father": ("child", "father"), "mother": ("child", "mother"),
         "parents": ("father", "mother")}
PARENTS = ("father", "mother")


@dataclass
class ParentBatch:
    """One probe batch as both parents see it: its tokens, each parent's layer outputs, and
    what the check sums over the parents alone (their similarity, angle and spreads per
    layer, their losses), so that a child is compared with them without running them. With
    a base, its loss too (its layer outputs are not kept: the rules use only its loss)."""

    ids: torch.Tensor
    mask: torch.Tensor
    states: dict[str, list[torch.Tensor]]  # parent -> its output at each decoder layer
    sums: dict[str, torch.Tensor]  # "similarity", "angle", "spread <parent>": per layer
    loss: dict[str, float]  # parent (and "base") -> summed next-token loss
    tokens: int  # predicted tokens in the batch
    nonfinite: list[str]  # where a parent's (or the base's) activations stop being finite


def nonfinite_in(role: str, trace) -> str | None:
    """Where a model's activations stop being finite, or None. NaN/Inf in a layer reaches
    the final state (the residual stream carries it), so only a non-finite final state or
    logits makes us look for the first bad layer."""
    if all_finite(trace.final) and all_finite(trace.logits):
        return None
    bad = next((layer for layer in range(trace.num_layers)
                if not all_finite(trace.layer_output(layer))), None)
    return f"{role} " + (f"from layer {bad}" if bad is not None else "logits")


def measure_parents(parents: dict, ids: torch.Tensor, mask: torch.Tensor) -> ParentBatch:
    """Both parents' (and the base's, when `parents` holds one) traced forward pass on one
    batch, kept as a `ParentBatch`."""
    traces = {role: trace_decoder(m, ids.to(_device(m)), mask.to(_device(m)),
                                  with_logits=True) for role, m in parents.items()}
    layers = traces["father"].num_layers
    states = {role: [traces[role].layer_output(layer) for layer in range(layers)]
              for role in PARENTS}
    sums = {key: torch.zeros(layers, dtype=torch.float64)
            for key in ("similarity", "angle", *(f"spread {p}" for p in PARENTS))}
    for layer in range(layers):
        sim, angle = token_similarity(states["father"][layer], states["mother"][layer], mask)
        sums["similarity"][layer] += sim.sum().cpu()
        sums["angle"][layer] += angle.sum().cpu()
        for parent in PARENTS:  # how far apart the parent's own token states lie
            sums[f"spread {parent}"][layer] += spread_angle(states[parent][layer],
                                                            mask).sum().cpu()
    loss, tokens = {}, 0
    for role in traces:
        logits = traces[role].logits
        loss[role], tokens = token_loss_sum(logits, ids.to(logits.device),
                                            mask.to(logits.device))
    nonfinite = [where for role in traces if (where := nonfinite_in(role, traces[role]))]
    return ParentBatch(ids, mask, states, sums, loss, tokens, nonfinite)


class _Totals:
    """Running sums for one probe set: per-layer similarities (per prompt) and losses."""

    def __init__(self, num_layers: int):
        zeros = {pair: torch.zeros(num_layers, dtype=torch.float64) for pair in PAIRS}
        self.sims = dict(zeros)
        self.angles = {pair: z.clone() for pair, z in zeros.items()}
        self.spreads = {parent: zeros[parent].clone() for parent in PARENTS}
        self.prompts = 0
        self.loss = dict.fromkeys(ROLES, 0.0)
        self.tokens = 0
        self.vocabulary = 0
        self.nonfinite = set()

    def add(self, child, parents: ParentBatch) -> None:
        """One batch: the child's trace against the parents' measurements of it."""
        where = nonfinite_in("child", child)
        self.nonfinite.update([where] if where else [], parents.nonfinite)
        for layer in range(len(self.sims["father"])):
            state = child.layer_output(layer)
            for parent in PARENTS:
                sim, angle = token_similarity(state, parents.states[parent][layer], parents.mask)
                self.sims[parent][layer] += sim.sum().cpu()
                self.angles[parent][layer] += angle.sum().cpu()
        self.sims["parents"] += parents.sums["similarity"]
        self.angles["parents"] += parents.sums["angle"]
        for parent in PARENTS:
            self.spreads[parent] += parents.sums[f"spread {parent}"]
        for role, loss in parents.loss.items():  # the parents' (and the base's)
            self.loss[role] = self.loss.get(role, 0.0) + loss
        self.prompts += parents.ids.shape[0]
        logits = child.logits
        self.vocabulary = logits.shape[-1]
        total, _ = token_loss_sum(logits, parents.ids.to(logits.device),
                                  parents.mask.to(logits.device))
        self.loss["child"] += total
        self.tokens += parents.tokens

    def result(self) -> dict:
        return {
            "similarity": {pair: (s / max(self.prompts, 1)).tolist()
                           for pair, s in self.sims.items()},
            "angle": {pair: (a / max(self.prompts, 1)).tolist()
                      for pair, a in self.angles.items()},
            "spread": {parent: (s / max(self.prompts, 1)).tolist()
                       for parent, s in self.spreads.items()},
            "loss": {r: loss / max(self.tokens, 1) for r, loss in self.loss.items()},
            "chance_loss": math.log(self.vocabulary) if self.vocabulary else math.nan,
        }


# -- the rules --------------------------------------------------------------

def arc_position(to_father: float, to_mother: float, parents: float) -> tuple[float, float]:
    """(off_arc, t): where the child's states sit against the arc between its parents.

    The flat triangle of the three mean angles: `t` in [0, 1] is the foot of the child
    on the father (0) to mother (1) segment, `off_arc` the child's distance to that
    segment, which is the distance to the nearer parent when the foot falls outside it
    (and when the parents coincide).
    """
    if not parents > 1e-12:
        return min(to_father, to_mother), (0.0 if to_father <= to_mother else 1.0)
    along = (to_father ** 2 + parents ** 2 - to_mother ** 2) / (2 * parents)
    if along <= 0:
        return to_father, 0.0
    if along >= parents:
        return to_mother, 1.0
    return max(to_father ** 2 - along ** 2, 0.0) ** 0.5, along / parents


def layer_table(per_probe: dict[str, dict], thresholds: HealthThresholds) -> list[dict]:
    """Per layer: similarities, angles and spreads averaged over probe sets; the flag.

    Interference when the child's distance off the arc between its parents exceeds
    `interference_ratio` * min(angle(father, mother), the parents' own spreads) +
    `interference_margin`: the allowance grows with the parents' difference only up to
    how far apart each parent's own states lie (docs/HEALTH.md).
    """
    names = list(per_probe)
    num_layers = len(per_probe[names[0]]["similarity"]["father"])

    def mean(kind: str, pair: str, layer: int) -> float:
        return sum(per_probe[n][kind][pair][layer] for n in names) / len(names)

    rows = []
    for layer in range(num_layers):
        angle = {pair: mean("angle", pair, layer) for pair in PAIRS}
        spread = {parent: mean("spread", parent, layer) for parent in PARENTS}
        off_arc, position = arc_position(angle["father"], angle["mother"], angle["parents"])
        allowed = thresholds.interference_ratio * min(angle["parents"], *spread.values()) \
            + thresholds.interference_margin
        rows.append({"layer": layer, **{f"sim_{p}": mean("similarity", p, layer) for p in PAIRS},
                     **{f"angle_{p}": angle[p] for p in PAIRS},
                     **{f"spread_{p}": spread[p] for p in PARENTS},
                     "detour": angle["father"] + angle["mother"] - angle["parents"],
                     "off_arc": off_arc, "position": position, "allowed_off_arc": allowed,
                     "interference": bool(not off_arc <= allowed)})  # NaN counts
    return rows


def expected_loss(result: dict) -> float:
    """The loss the child's place between its parents predicts on one probe set: at its
    final layer the child sits at position t of the arc (0 father, 1 mother), so the
    better parent's loss when it sits at the better parent, blending towards the other."""
    angle, loss = result["angle"], result["loss"]
    _, t = arc_position(angle["father"][-1], angle["mother"][-1], angle["parents"][-1])
    return (1 - t) * loss["father"] + t * loss["mother"]


def function_judged(result: dict) -> bool:
    """Whether a probe set shows a function to lose: a parent reads it better than a
    uniform guess over the vocabulary (`chance_loss`, ln V). A tiny model reads English
    worse than that (about 8 nats against 4.85): its child's loss there is noise."""
    loss = result["loss"]
    return min(loss["father"], loss["mother"]) < result["chance_loss"]


def base_expected_loss(result: dict) -> float | None:
    """With a base (its loss measured on the probe set): the base's loss plus each parent's
    own change over it, the loss of a child that keeps both fine-tunes (base + both task
    vectors) when their effects add. A parent's cost is paid once more (the father's and the
    mother's forgetting on text neither was trained for), a parent's gain must be kept: a
    gain is not clamped to 0, which would let a child fall back to the base's loss on a
    parent's own skill (a child with that parent's fine-tuned block zeroed passed so,
    docs/HEALTH.md). None without a base."""
    loss = result["loss"]
    if BASE not in loss:
        return None
    base = loss[BASE]
    return base + (loss["father"] - base) + (loss["mother"] - base)


def function_reference(result: dict) -> tuple[float, str]:
    """(the loss the child may reach before the margin, which reference gives it): the
    loss its position between the parents predicts ("parents"), or with a base the base's
    reference when larger ("base": `base_expected_loss`, a child may pay both fine-tunes'
    own costs over the base). A base never makes the check stricter."""
    expected, base = expected_loss(result), base_expected_loss(result)
    if base is not None and base > expected:
        return base, BASE
    return expected, "parents"


def allowed_loss(result: dict, thresholds: HealthThresholds) -> float:
    return function_reference(result)[0] + thresholds.loss_margin


def function_losses(per_probe: dict[str, dict], thresholds: HealthThresholds) -> list[str]:
    """Probe sets on which the child's loss exceeds the loss its position predicts (the
    better parent's, where it sits at the better parent; with a base, the base's reference
    when larger: `function_reference`) by more than the margin; only where the function is
    judged (`function_judged`)."""
    lost = []
    for name, result in per_probe.items():
        if not function_judged(result):
            continue
        if not result["loss"]["child"] <= allowed_loss(result, thresholds):  # NaN: lost
            lost.append(name)
    return lost


def loss_reason(name: str, result: dict) -> str:
    """The reason line of a function loss: the child's loss against its reference."""
    loss = result["loss"]
    reference, by = function_reference(result)
    parents = f"father {loss['father']:.3f}, mother {loss['mother']:.3f}"
    if by == BASE:
        return (f"function loss on {name}: child loss {loss['child']:.3f} vs {reference:.3f} "
                f"the base's reference allows (base {loss[BASE]:.3f} plus each parent's own "
                f"change over it; {parents})")
    base = f", base {loss[BASE]:.3f}" if BASE in loss else ""
    return (f"function loss on {name}: child loss {loss['child']:.3f} vs {reference:.3f} "
            f"expected where it sits ({parents}{base})")


def verdict_of(nonfinite: dict, lost: list[str], interference: list[int],
               per_probe: dict[str, dict]) -> tuple[str, list[str]]:
    """(verdict, reasons) from the three rules."""
    reasons = []
    if nonfinite["weights"]:
        reasons.append(f"non-finite weights in {len(nonfinite['weights'])} tensor(s) "
                       f"(e.g. {nonfinite['weights'][0]})")
    if nonfinite["activations"]:
        reasons.append(f"non-finite activations: {', '.join(nonfinite['activations'][:3])}")
    reasons += [loss_reason(name, per_probe[name]) for name in lost]
    if interference:
        reasons.append(f"interference at layer(s) {', '.join(map(str, interference))}: the "
                       "child's hidden states lie off the arc between its parents' by more than "
                       "the parents' own difference and spread allow")
    if nonfinite["weights"] or nonfinite["activations"] or lost:
        return "unhealthy", reasons
    return ("warning" if interference else "healthy"), reasons


# -- the whole check --------------------------------------------------------

def _as_model(model_or_path, device: str, dtype: str):
    if isinstance(model_or_path, torch.nn.Module):
        return model_or_path.eval()
    return load_model(model_or_path, device, dtype)


def _tokenizer_for(tokenizer, models: dict):
    if tokenizer is not None:
        return tokenizer
    for role in ("father", "child", "mother"):
        if role in models and not isinstance(models[role], torch.nn.Module):
            return load_tokenizer(models[role])
    raise UsageError("check_health: pass `tokenizer` when every model is given in memory")


def _check_shapes(models: dict) -> None:
    from ..inspection import require_mergeable

    paths = {r: m for r, m in models.items() if not isinstance(m, torch.nn.Module)}
    if "father" in paths:
        with ModelSource(paths["father"]) as a:
            for role in ("mother", "child", BASE):
                if role in paths:
                    with ModelSource(paths[role]) as b:
                        require_mergeable(a, b, role_b=role)


def _probe_texts(probes, max_prompts: int | None, max_tokens: int,
                 batch_size: int) -> dict[str, list[str]]:
    if max_tokens < 2 or batch_size < 1:
        raise UsageError("--max-tokens must be at least 2 (for a loss), --batch-size at least 1")
    return {n: t[:max_prompts] for n, t in P.load_probes(probes).items()}


def _settings(texts: dict, device: str, dtype: str, max_tokens: int, max_prompts: int | None,
              batch_size: int) -> dict:
    """The report's `settings`: what a check measured with (a reference must match them)."""
    return {"device": device, "dtype": dtype, "max_tokens": max_tokens,
            "max_prompts": max_prompts, "batch_size": batch_size,
            "probes_sha256": P.probes_sha256(texts)}


def _parent_batches(parents: dict, tokenizer, texts: dict, max_tokens: int,
                    batch_size: int) -> tuple[dict[str, Iterator[ParentBatch]], int]:
    """Per probe set, its batches as both parents (and the base, when `parents` holds one)
    see them (measured as they are read), and the number of batches."""
    context = P.context_length(parents["father"])
    pad_id = P.pad_id_of(tokenizer)
    token_rows = {name: P.tokenize_probe(tokenizer, name, prompts, max_tokens, context)
                  for name, prompts in texts.items()}
    batches = {name: (measure_parents(parents, ids, mask)
                      for ids, mask in P.batches(rows, batch_size, pad_id))
               for name, rows in token_rows.items()}
    return batches, sum(-(-len(rows) // batch_size) for rows in token_rows.values())


@dataclass
class ParentReference:
    """Both parents measured once on every probe batch (`parent_reference`): a search checks
    many children against the same parents, and each check then runs the child alone. It
    holds every parent layer output on the probes (memory_plan.parent_states_bytes); with a
    base, the base's losses too (a check must then name the same base, and one without a
    base needs a reference measured without one)."""

    father: str
    mother: str
    settings: dict  # the health report's settings it was measured with
    num_layers: int
    nonfinite_weights: list[str]  # "father: <tensor>", "mother: <tensor>", "base: <tensor>"
    batches: dict[str, list[ParentBatch]]
    base: str | None = None  # the base measured beside the parents (loss reference)


def _given(father, mother, base) -> dict:
    """The reference models by role: both parents, and the base when there is one."""
    return {"father": father, "mother": mother, **({BASE: base} if base is not None else {})}


def _reference_weights(given: dict) -> list[str]:
    return [f"{role}: {name}" for role in (*PARENTS, BASE) if role in given
            for name in nonfinite_weights(given[role])]


def parent_reference(father, mother, probes: str | Path | None = None, device: str = "cpu",
                     dtype: str = "float32", max_tokens: int = 64,
                     max_prompts: int | None = None, batch_size: int = 8,
                     tokenizer=None, base=None) -> ParentReference:
    """Measure both parents (model folders), and the base when given, on the probes, for
    `check_health(parents=...)`."""
    texts = _probe_texts(probes, max_prompts, max_tokens, batch_size)
    given = _given(father, mother, base)
    _check_shapes(given)
    weights = _reference_weights(given)
    models = {role: _as_model(model, device, dtype) for role, model in given.items()}
    depths = {role: len(decoder_of(m).layers) for role, m in models.items()}
    if len(set(depths.values())) != 1:
        raise IncompatibleModelsError(f"different decoder depths: {depths}")
    batches, _ = _parent_batches(models, _tokenizer_for(tokenizer, given), texts, max_tokens,
                                 batch_size)
    settings = _settings(texts, device, dtype, max_tokens, max_prompts, batch_size)
    return ParentReference(str(father), str(mother), settings, depths["father"], weights,
                           {name: list(measured) for name, measured in batches.items()},
                           None if base is None else str(base))


def check_health(child, father, mother, probes: str | Path | None = None,
                 device: str = "cpu", dtype: str = "float32", max_tokens: int = 64,
                 max_prompts: int | None = None, batch_size: int = 8,
                 thresholds: HealthThresholds | None = None, tokenizer=None,
                 progress: bool = False, parents: ParentReference | None = None,
                 stop_when_unhealthy: bool = False, base=None) -> dict:
    """Compare a child with both parents; return the report that health.json holds.

    Each of child, father, mother (and base) is a model folder or an in-memory causal LM
    (the search passes its candidate without writing it). All are held at once, unless
    `parents` (`parent_reference` of the same parents, base and settings) gives the
    parents' side, measured before: then only the child runs, and the report is the same.
    `base`: the parents' common ancestor; its loss on each probe set widens the function-loss
    reference to the base's loss plus both parents' own changes over it (`function_reference`).
    `run_health` writes the report into a folder too (health.json, health.png).
    `stop_when_unhealthy`: for a caller that needs the verdict only, stop at the first
    probe set with a function loss or a non-finite activation (the verdict is then
    `unhealthy` whatever the others show); the report holds the probe sets measured.
    """
    thresholds = thresholds or HealthThresholds()
    texts = _probe_texts(probes, max_prompts, max_tokens, batch_size)
    reference = _given(father, mother, base)
    given = {"child": child, **reference}
    settings = _settings(texts, device, dtype, max_tokens, max_prompts, batch_size)
    if parents is not None:
        _require_reference(parents, father, mother, base, settings)
    # a reference's parents (and base) were checked against each other when it was measured:
    # the search's check of each candidate reads no vocabulary again (a quarter of its time)
    _check_shapes(given if parents is None else {"father": father, "child": child})
    parent_weights = parents.nonfinite_weights if parents is not None else \
        _reference_weights(reference)
    nonfinite = {"weights": [f"child: {name}" for name in nonfinite_weights(child)]
                 + parent_weights, "activations": []}
    report = {"thresholds": asdict(thresholds), "nonfinite": nonfinite, "settings": settings,
              "with_base": base is not None, "flagged_layers": [], "function_loss": [],
              "function_unjudged": [], "layers": [], "probe_sets": {}}
    if nonfinite["weights"]:  # NaN propagates everywhere: comparing activations means nothing
        report["verdict"], report["reasons"] = verdict_of(nonfinite, [], [], {})
        return report
    child_model = _as_model(child, device, dtype)
    if parents is None:
        models = {role: _as_model(model, device, dtype) for role, model in reference.items()}
        depths = {role: len(decoder_of(m).layers) for role, m in
                  {"child": child_model, **models}.items()}
        batches, total = _parent_batches(models, _tokenizer_for(tokenizer, given), texts,
                                         max_tokens, batch_size)
    else:
        depths = {"child": len(decoder_of(child_model).layers), "parents": parents.num_layers}
        batches = parents.batches
        total = sum(len(measured) for measured in batches.values())
    if len(set(depths.values())) != 1:
        raise IncompatibleModelsError(f"different decoder depths: {depths}")
    with progress_bar(progress) as bar:
        what = ", ".join(given) if parents is None else \
            f"child; {'parents and base' if base is not None else 'parents'} measured before"
        per_probe = _measure(child_model, batches, depths["child"], nonfinite,
                             bar.add_task(f"health check ({what})", total=total), bar,
                             thresholds if stop_when_unhealthy else None)
    for result in per_probe.values():  # the function-loss reference, written beside the losses
        result["allowed_loss"] = allowed_loss(result, thresholds)
        result["function_reference"] = function_reference(result)[1]
    rows = layer_table(per_probe, thresholds)
    interference = [row["layer"] for row in rows if row["interference"]]
    lost = function_losses(per_probe, thresholds)
    report["verdict"], report["reasons"] = verdict_of(nonfinite, lost, interference, per_probe)
    report.update(flagged_layers=interference, function_loss=lost, layers=rows,
                  probe_sets=per_probe, function_unjudged=[
                      name for name, result in per_probe.items() if not function_judged(result)])
    return report


def _require_reference(parents: ParentReference, father, mother, base, settings: dict) -> None:
    if (parents.base is None) != (base is None):
        raise UsageError(
            "check_health: the parents' reference was measured " + (
                "without a base and this check has one: measure it with the same base "
                "(parent_reference(..., base=...))" if base is not None else
                "with a base and this check has none: measure it without one"))
    if (parents.father, parents.mother, parents.base, parents.settings) != (
            str(father), str(mother), None if base is None else str(base), settings):
        raise UsageError("check_health: the parents' reference was measured for other parents "
                         "or settings (or another base)")


def _measure(child, batches: dict, num_layers: int, nonfinite: dict, task, bar: Progress,
             stop_at_loss: HealthThresholds | None = None) -> dict[str, dict]:
    """Per probe set, the child traced on each batch and summed against the parents;
    `stop_at_loss`: stop after the first probe set lost under these thresholds."""
    per_probe = {}
    for name, measured in batches.items():
        totals = _Totals(num_layers)
        for parents in measured:
            trace = trace_decoder(child, parents.ids.to(_device(child)),
                                  parents.mask.to(_device(child)), with_logits=True)
            totals.add(trace, parents)
            bar.advance(task)
        per_probe[name] = totals.result()
        nonfinite["activations"] += sorted(f"{name}: {where}" for where in totals.nonfinite)
        if stop_at_loss is not None and (
                nonfinite["activations"] or function_losses({name: per_probe[name]},
                                                            stop_at_loss)):
            break
    return per_probe


def _device(model) -> torch.device:
    return next(model.parameters()).device
