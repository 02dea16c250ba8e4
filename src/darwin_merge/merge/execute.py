"""The one executor: a `MergeSpec` (merge/spec.py) run tensor by tensor, in memory (the
search) or streamed into a child's shards (`darwin merge`, with or without a mergekit YAML).

Every step goes through `merge_step`: every model's tensor checked for NaN and Inf (a
clipping bound may be Inf), the arithmetic of `merge/ops.py` in the spec's dtype on the
reference tensor's device, the result checked and cast by one dtype rule. DARE's masks are
drawn on the CPU from a generator seeded by (the spec's seed, tensor name, model), so the
child depends on neither the device, the thread count nor the order of the tensors. A step
that is elementwise is streamed in chunks (peak memory a few chunks, whatever the model's
size), its generators carried from chunk to chunk so that chunks give the whole tensor's
numbers; the others are read whole.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch

from ..arch.rules import MergeMode
from ..errors import IncompatibleModelsError, NumericalError
from ..io.stream import OutputTensor, StreamingWriter, TensorReader
from ..progress import track
from .ops import (
    all_finite,
    blend,
    clip_bound,
    dare_owned,
    linear,
    magnitude_trim_fast,
    merge_pair,
    ties_merge,
    ties_merge_pair,
    weighted_sum,
)
from .spec import MergeSpec, StepKind, TensorStep, Trim
from .vocab_rows import RowStreams, stream_vocab_tensor

CHUNK_ELEMENTS = 1 << 20  # 4 MiB of float32 per model and temporary
SUM_OF_ONE = 1e-12  # two weights summing to 1 within this are interpolated as they are
TINY_DIVISOR = 1e-8  # a mean over weights summing to less than this is left a sum (mergekit)

Tensors = Mapping[str, torch.Tensor]  # model name -> its tensor (or chunk) for one step


def dare_generator(seed: str, tensor_name: str, model: str) -> torch.Generator:
    """A CPU generator seeded from sha256(seed, tensor name, model)."""
    digest = hashlib.sha256(f"{seed}\0{tensor_name}\0{model}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def step_generators(spec: MergeSpec, step: TensorStep) -> tuple[torch.Generator, ...]:
    """One generator per contribution, in order (a chunked step passes them on)."""
    return tuple(dare_generator(spec.seed, step.name, model) for model in step.models)


def merge_step(spec: MergeSpec, step: TensorStep, tensors: Tensors,
               out_dtype: torch.dtype | None = None,
               generators: tuple[torch.Generator, ...] | None = None,
               memo: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The child's tensor (or chunk) for one step, in `out_dtype` (default: the reference
    model's dtype). `memo` keeps a task-vector step's merged task vectors before its scale,
    per tensor: only for specs that differ in their scales alone (the tuned baselines'
    grid); the child is the same bits either way."""
    reference = tensors[spec.reference]
    if step.kind is StepKind.EXACT:
        for model, tensor in tensors.items():
            if not torch.equal(reference, tensor):
                raise IncompatibleModelsError(
                    f"non-float tensor {step.name!r} differs between {spec.label(model)} and "
                    f"{spec.label(spec.reference)}; darwin only merges float weights")
        return reference.clone()
    for model, tensor in tensors.items():
        if not all_finite(tensor, step.bounds):  # every model: a dropped entry hides a NaN
            raise NumericalError(f"tensor {step.name!r} of {spec.label(model)} contains NaN "
                                 "or Inf; the merge would spread it (fix or re-export that "
                                 "model)")
    target = out_dtype or reference.dtype
    if step.kind is StepKind.TAKE:
        child = tensors[step.models[0]].to(target)
    elif step.kind in (StepKind.CLIP_MIN, StepKind.CLIP_MAX):
        child = functools.reduce(lambda a, b: clip_bound(a, b, MergeMode(step.kind.value)),
                                 [tensors[m] for m in step.models]).to(target)
    else:
        child = _arithmetic(spec, step, tensors, generators, memo).to(target)
    if not all_finite(child, step.bounds):
        raise NumericalError(f"merged tensor {step.name!r} is not finite in {target} "
                             "(overflow?); nothing was written")
    return child


def _arithmetic(spec: MergeSpec, step: TensorStep, tensors: Tensors, generators, memo
                ) -> torch.Tensor:
    """An interpolation or a task-vector merge: darwin's pair with the fused kernel
    (ops.merge_pair, chunk by chunk), any other in the reference form."""
    if not step.is_pair:
        return reference_form(spec, step, tensors, memo)
    anchor, (father, mother) = _in_compute_dtype(spec, step, tensors)
    first, second = step.contributions
    return merge_pair(father, mother, anchor, second.weight, first.density, second.density,
                      step.task_vector_share, generators or step_generators(spec, step),
                      step.mean)


def _in_compute_dtype(spec: MergeSpec, step: TensorStep, tensors: Tensors):
    """(base, the contributions' tensors) in the spec's dtype on the reference's device. A
    model's tensor that is the base's (merge/engine.py's ParentTensors shares it) stays the
    base's object: the fused kernel then knows its task vector is zero."""
    device = tensors[spec.reference].device
    base = None if step.base is None else tensors[step.base]
    anchor = None if base is None else base.to(device, spec.compute_dtype)
    return anchor, [anchor if tensors[m] is base else tensors[m].to(device, spec.compute_dtype)
                    for m in step.models]


def reference_form(spec: MergeSpec, step: TensorStep, tensors: Tensors,
                   memo: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """An interpolation or a task-vector merge as merge/spec.py describes it, one step of
    ops.py after another (whole tensors: a magnitude trim ranks the whole tensor, DARE
    draws one mask per tensor). A pair step's fused kernel gives these numbers to float
    rounding (tests/test_merge_spec.py)."""
    anchor, xs = _in_compute_dtype(spec, step, tensors)
    if step.kind is StepKind.INTERPOLATE:
        return interpolate(xs, step.weights, step.mean)
    child = _task_vectors(spec, step, anchor, xs, memo)
    if step.task_vector_share >= 1.0:
        return child
    return blend(child, interpolate(xs, step.weights, mean=True), step.task_vector_share)


def interpolate(xs: list[torch.Tensor], weights: list[float], mean: bool) -> torch.Tensor:
    """The weighted sum of the models (divided by the total weight when `mean`; two models
    as darwin's interpolation, (1 - r) A + r B). A zero total is refused by the compilers."""
    if not mean:
        return weighted_sum(xs, weights)
    total = sum(weights)
    if len(xs) == 2:
        share = weights[1] if abs(total - 1.0) < SUM_OF_ONE else weights[1] / total
        return linear(xs[0], xs[1], share)
    return weighted_sum(xs, weights) / total


def _task_vectors(spec: MergeSpec, step: TensorStep, anchor: torch.Tensor | None,
                  xs: list[torch.Tensor], memo: dict | None) -> torch.Tensor:
    """base + scale * the merged task vectors (the reference form; see merge/spec.py)."""
    if not xs:  # every model is the base
        return anchor
    anchor = xs[0] if anchor is None else anchor
    if memo is None or step.name not in memo:
        deltas = [_trimmed(x - anchor, c, spec, step) for x, c in zip(xs, step.contributions,
                                                                      strict=True)]
        if step.sign_election and len(deltas) == 2:  # the fused form of the same numbers
            merged = ties_merge_pair(*deltas, tuple(step.weights), disjoint_mean=step.mean,
                                     tie_sign=step.tie_sign)
        elif step.sign_election:
            merged = ties_merge(deltas, step.weights, disjoint_mean=step.mean,
                                tie_sign=step.tie_sign)
        else:
            merged = weighted_sum(deltas, step.weights)
            divisor = sum(step.weights)
            if step.mean and abs(divisor) >= TINY_DIVISOR:
                merged = merged / divisor
        if memo is None:
            return anchor + merged * step.scale
        memo[step.name] = merged
    return anchor + memo[step.name] * step.scale


def _trimmed(delta: torch.Tensor, contribution, spec: MergeSpec, step: TensorStep
             ) -> torch.Tensor:
    """A contribution's task vector trimmed (`delta` is the caller's own: changed in place)."""
    if contribution.keep_largest < 1.0:
        delta = magnitude_trim_fast(delta, contribution.keep_largest, rescale=False)
    if contribution.trim is Trim.MAGNITUDE:
        return magnitude_trim_fast(delta, contribution.density, step.rescale)
    if contribution.trim is Trim.DARE:
        generator = dare_generator(spec.seed, step.name, contribution.model)
        return dare_owned(delta, contribution.density, generator, step.rescale)
    return delta


def output_dtype(step: TensorStep, own: torch.dtype, out_dtype: torch.dtype | None
                 ) -> torch.dtype:
    """The one dtype rule: an exact or non-float tensor keeps its own dtype; any other takes
    the child's (`out_dtype`), else the reference model's."""
    if step.kind is StepKind.EXACT or not own.is_floating_point:
        return own
    return out_dtype or own


# -- in memory (the search) ---------------------------------------------------------
def merge_in_memory(spec: MergeSpec, lookup: Callable[[str, str], torch.Tensor],
                    out_dtype: torch.dtype | None = None,
                    memo: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The child's state dict from `lookup(model, tensor name)`, each tensor whole, on the
    models' device. A `take` tensor is the model's own (no copy): read-only."""
    return {step.name: merge_step(spec, step, {m: lookup(m, step.name) for m in spec.models},
                                  out_dtype, memo=memo)
            for step in spec.steps}


# -- streaming to disk --------------------------------------------------------------
def write_child_tensors(spec: MergeSpec, readers: Mapping[str, TensorReader], folder: Path,
                        out_dtype: torch.dtype | None, device: torch.device, shard_size: int,
                        chunk_elements: int = CHUNK_ELEMENTS, progress: bool = True,
                        vocab: RowStreams | None = None) -> None:
    """Every step's tensor streamed into the child's shards in `folder`: an elementwise
    step chunk by chunk, any other whole. Token-row tensors of parents whose vocabularies
    differ (`vocab`; two models, no base) go a block of rows at a time, each child row from
    the parents' rows for its token (merge/vocab_rows.py)."""
    reference = readers[spec.reference]
    planned = [OutputTensor(s.name, s.shape, output_dtype(s, reference.dtype(s.name), out_dtype))
               for s in spec.steps]
    writer = StreamingWriter(folder, planned, shard_size)
    try:
        for step, out in track(list(zip(spec.steps, planned, strict=True)), len(planned),
                               "merging tensors", progress):
            if vocab is not None and step.name in vocab.names:
                _write_rows(spec, step, readers, vocab, writer, out.dtype, chunk_elements)
            elif step.elementwise:
                _write_chunks(spec, step, readers, writer, out_dtype, device, chunk_elements)
            else:
                whole = {m: r.read(step.name).reshape(step.shape).to(device)
                         for m, r in readers.items()}
                writer.write(step.name, merge_step(spec, step, whole, out_dtype))
        writer.finish()
    finally:
        writer.close()


def _write_rows(spec: MergeSpec, step: TensorStep, readers: Mapping[str, TensorReader],
                vocab: RowStreams, writer: StreamingWriter, target: torch.dtype,
                chunk_elements: int) -> None:
    generators = step_generators(spec, step)
    father, mother = spec.models  # parents with different vocabularies have no base

    def merge(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return merge_step(spec, step, {father: a, mother: b}, target, generators)

    stream_vocab_tensor(step.name, step.shape, [readers[father], readers[mother]],
                        vocab.alignment, writer, merge, chunk_elements)


def _write_chunks(spec: MergeSpec, step: TensorStep, readers: Mapping[str, TensorReader],
                  writer: StreamingWriter, out_dtype, device, chunk_elements: int) -> None:
    numel = readers[spec.reference].source.spec(step.name).numel
    generators = step_generators(spec, step)
    for start in range(0, max(numel, 1), chunk_elements):
        count = min(chunk_elements, numel - start)
        parts = {m: r.read(step.name, start, count).to(device) for m, r in readers.items()}
        writer.write(step.name, merge_step(spec, step, parts, out_dtype, generators))


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """Run a block with `count` torch CPU threads, restoring the previous count after."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
