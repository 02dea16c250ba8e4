"""Run a mergekit config with darwin's engine: its readers, checks, writer and ops.

Every tensor of the reference model (the base, else the first model) is merged whole,
one at a time: read from each model, merged in float32 with `merge/ops.py`, checked
for NaN/Inf and streamed into the child's shards inside a temporary folder that is
renamed into place only when complete (docs/MERGE.md, "mergekit interop").
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..arch import Taxonomy
from ..arch.taxonomy import TensorInfo
from ..errors import IncompatibleModelsError, ModelFormatError, NumericalError, UsageError
from ..inspection import require_mergeable
from ..io import ModelSource
from ..io.dtypes import main_dtype, parse_dtype, torch_dtype
from ..io.loading import resolve_device
from ..io.stream import OutputTensor, StreamingWriter, TensorReader
from ..io.writer import DEFAULT_SHARD_BYTES, atomic_output_dir, copy_side_files, write_config
from ..merge.engine import (
    CLIP_KINDS,
    cpu_threads,
    dare_generator,
)
from ..merge.ops import (
    all_finite,
    clip_bound,
    dare,
    linear,
    magnitude_trim_fast,
    ties_merge,
    weighted_sum,
)
from ..progress import track
from ..resources import require_disk
from .config import (
    GLOBAL_DEFAULTS,
    TENSOR_DEFAULTS,
    MergekitConfig,
    Parameters,
    first_value,
    load_config,
)

CONFIG_COPY = "mergekit_config.yml"  # mergekit's own name for the config in its output
SUM_OF_ONE = 1e-12  # two weights summing to 1 within this are used as they are
TINY_DIVISOR = 1e-8  # mergekit's task-arithmetic normalize skips divisors this small
# mergekit's sign election elects + where the weighted task vectors sum to exactly 0
# (`sum >= 0`); darwin's own merges elect 0 there (merge/ops.py, ties_elect)
MERGEKIT_TIE_SIGN = 1.0


@dataclass(frozen=True)
class Inputs:
    """The models of a config, in order, with their own parameters, and the base."""

    models: tuple[tuple[str, Parameters | None], ...]
    base: str | None
    slice_parameters: Parameters | None
    layer_ranges: tuple[tuple[int, int], ...] | None  # a slice's ranges, checked later


def resolve_inputs(config: MergekitConfig) -> Inputs:
    if config.models is not None:
        models = tuple((m.model, m.parameters) for m in config.models)
        inputs = Inputs(models, config.base_model, None, None)
    else:
        output = config.slices[0]
        inputs = Inputs(tuple((s.model, s.parameters) for s in output.sources),
                        output.base_model or config.base_model, output.parameters,
                        tuple(s.layer_range for s in output.sources))
    names = [name for name, _ in inputs.models]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"model {repeated[0]!r} is listed twice")
    if config.merge_method == "linear" and inputs.base is not None and inputs.base not in names:
        raise UsageError(f"linear does not use base_model {inputs.base!r}: remove it, or "
                         "list it under models with a weight")
    return inputs


def model_folder(reference: str) -> Path:
    """A model reference must be a local folder: darwin downloads nothing."""
    if "+" in reference and not Path(reference).exists():
        raise UsageError(f"model {reference!r}: LoRA references (model+lora) are not supported")
    path = Path(reference)
    if not path.is_dir():
        raise ModelFormatError(f"model {reference!r} is not a local folder (darwin reads "
                               "local model folders only; download it first)")
    return path


def config_hash(config: MergekitConfig) -> str:
    """Seeds DARE's masks: the same config gives the same child."""
    text = config.model_dump_json()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def layer_position(info: TensorInfo, num_layers: int | None) -> float:
    """mergekit's t: layer / (L - 1) in the layers; 0 for the input embeddings (its
    "pre" weights), 1 for everything after the layers (final norm, lm_head)."""
    if info.layer is not None:
        return info.layer / (num_layers - 1) if num_layers and num_layers > 1 else 1.0
    before_layers = info.component in ("embed", "per_layer_embed") and "lm_head" not in info.name
    return 0.0 if before_layers else 1.0


def merge_from_config(config_path: str | Path, out: str | Path, *, device: str = "cpu",
                      dtype: str | None = None, overwrite: bool = False, progress: bool = True,
                      shard_size: int = DEFAULT_SHARD_BYTES, threads: int | None = 1,
                      allow_pickle: bool = False, trust_remote_code: bool = False) -> Path:
    """Merge the models of a mergekit config into `out`; returns the child's folder.

    `dtype` (else the config's out_dtype, else its dtype, else each tensor's own) is the
    child's dtype; the arithmetic is float32 on `device`.
    """
    config_path, out = Path(config_path), Path(out)
    config = load_config(config_path)
    inputs = resolve_inputs(config)
    names = [name for name, _ in inputs.models]
    refs = names + ([inputs.base] if inputs.base is not None and inputs.base not in names
                    else [])
    trust = dict(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    if any(Path(r).resolve() == out.resolve() for r in refs):
        raise UsageError(f"{out}: the output folder is one of the models")
    sources = {}
    try:
        for ref in refs:
            sources[ref] = ModelSource(model_folder(ref), **trust)
        reference = sources[inputs.base or names[0]]
        _require_same_models(reference, sources)
        taxonomy = Taxonomy(reference.config)
        _require_whole_slices(inputs, taxonomy.num_layers)
        out_name = dtype or config.out_dtype or config.dtype
        out_dtype = parse_dtype(out_name) if out_name else None
        require_disk(out, reference.total_bytes if out_dtype is None else
                      reference.num_params * torch.finfo(out_dtype).bits // 8)
        tokenizer = _tokenizer_folder(config.tokenizer_source or inputs.base or names[0],
                                      inputs)
        folders = FolderTensors(sources)
        merger = TensorMerger(config, inputs, folders.read, resolve_device(device), out_dtype,
                              taxonomy.num_layers)
        with atomic_output_dir(out, overwrite=overwrite) as tmp, cpu_threads(threads):
            try:
                merger.write_all(taxonomy.classify_all(reference.specs()), reference, tmp,
                                 shard_size, progress)
            finally:
                folders.close()
            write_config(reference.config, tmp, out_dtype or main_dtype(reference))
            copy_side_files(tokenizer, tmp)
            (tmp / CONFIG_COPY).write_text(config_path.read_text(encoding="utf-8"))
    finally:
        for source in sources.values():
            source.close()
    return out


def _require_same_models(reference: ModelSource, sources: dict) -> None:
    for ref, source in sources.items():
        float8 = [n for n in source.names if source.spec(n).dtype.startswith("F8")]
        if float8:
            raise ModelFormatError(f"{ref}: float8 tensors ({float8[0]}) are not supported; "
                                   "convert the model to bfloat16 or float32 first")
        if source is reference:
            continue
        if source.config.get("model_type") != reference.config.get("model_type"):
            raise IncompatibleModelsError(
                f"{ref} is a {source.config.get('model_type')}, {reference.path} a "
                f"{reference.config.get('model_type')}; darwin merges one architecture")
        require_mergeable(reference, source, f"model {ref}")


def _require_whole_slices(inputs: Inputs, num_layers: int | None) -> None:
    for layer_range in inputs.layer_ranges or ():
        if tuple(layer_range) != (0, num_layers):
            raise UsageError(f"slices: layer_range {list(layer_range)} is not the whole model "
                             f"([0, {num_layers}]); darwin runs whole-model slices only")


def _tokenizer_folder(tokenizer: str, inputs: Inputs) -> Path:
    if tokenizer == "base" and inputs.base is not None:
        return model_folder(inputs.base)
    if tokenizer in [n for n, _ in inputs.models] or tokenizer == inputs.base:
        return model_folder(tokenizer)
    raise UsageError(f"tokenizer_source {tokenizer!r}: darwin keeps one model's tokenizer; "
                     "name one of the models or `base` (no union)")


class FolderTensors:
    """Whole tensors of the config's model folders, read with plain file reads (a memory
    map's touched pages would stay resident until the end: docs/MERGE.md, "Streaming and
    memory")."""

    def __init__(self, sources: dict[str, ModelSource]):
        self.sources = sources
        self.readers: dict[str, TensorReader] = {}

    def read(self, ref: str, name: str) -> torch.Tensor:
        if ref not in self.readers:
            self.readers[ref] = TensorReader(self.sources[ref])
        return self.readers[ref].read(name).reshape(self.sources[ref].spec(name).shape)

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()


TensorLookup = Callable[[str, str], torch.Tensor]  # (model reference, tensor name) -> tensor


class TensorMerger:
    """Evaluates the config's parameters for each tensor and merges it.

    `read` gives a model's whole tensor (from its folder, or from memory for the search's
    baselines); `dare_key` seeds DARE's masks (default: the config's hash). With `memo`,
    the merged task vectors before `lambda` are kept per tensor and reused: the caller
    shares one memo only between configs that differ in `lambda` alone (the tuned
    baselines' grid, evolve/baselines.py), and `base + merged * lambda` is computed the
    same way either way, so the child is the same bits.
    """

    def __init__(self, config: MergekitConfig, inputs: Inputs, read: TensorLookup,
                 device: torch.device, out_dtype: torch.dtype | None, num_layers: int | None,
                 dare_key: str | None = None, memo: dict[str, torch.Tensor] | None = None):
        self.config, self.inputs, self.read = config, inputs, read
        self.device, self.out_dtype, self.num_layers = device, out_dtype, num_layers
        self.key = dare_key or config_hash(config)
        self.memo = memo

    def write_all(self, infos: list[TensorInfo], reference: ModelSource, folder: Path,
                  shard_size: int, progress: bool) -> None:
        planned = [OutputTensor(i.name, reference.spec(i.name).shape,
                                self._output_dtype(torch_dtype(reference.spec(i.name).dtype), i))
                   for i in infos]
        writer = StreamingWriter(folder, planned, shard_size)
        try:
            for info in track(infos, len(infos), "merging tensors", progress):
                writer.write(info.name, self.merge(info))
            writer.finish()
        finally:
            writer.close()

    def _output_dtype(self, own: torch.dtype, info: TensorInfo) -> torch.dtype:
        if info.merge_kind == "exact" or not own.is_floating_point:
            return own
        return self.out_dtype or own

    def merge(self, info: TensorInfo) -> torch.Tensor:
        """The child's tensor (whole), in the output dtype."""
        name = info.name
        models = {ref: self.read(ref, name) for ref, _ in self.inputs.models}
        base = None if self.inputs.base is None else self.read(self.inputs.base, name)
        inputs = {**models, **({} if base is None else {self.inputs.base: base})}
        first = base if base is not None else next(iter(models.values()))
        if info.merge_kind == "exact":
            if any(not torch.equal(first, t) for t in inputs.values()):
                raise IncompatibleModelsError(f"non-float tensor {name!r} differs between "
                                              "the models; darwin only merges float weights")
            return first.clone()
        clip = info.merge_kind in CLIP_KINDS  # bounds may be +-Inf ("no bound"), never NaN
        for ref, tensor in inputs.items():
            if not all_finite(tensor, clip):
                raise NumericalError(f"tensor {name!r} of {ref} contains NaN or Inf")
        if clip:  # the looser bound, as in every darwin merge (interpolating Inf gives NaN)
            child = functools.reduce(lambda a, b: clip_bound(a, b, info.merge_kind),
                                     inputs.values())
        else:
            child = self._combine(name, layer_position(info, self.num_layers), models, base)
        child = child.to(self._output_dtype(first.dtype, info))
        if not all_finite(child, clip):
            raise NumericalError(f"merged tensor {name!r} is not finite in {child.dtype} "
                                 "(overflow?); nothing was written")
        return child

    def _global(self, name: str, tensor_name: str, t: float):
        levels = [self.inputs.slice_parameters, self.config.parameters]
        value = first_value(levels, name, tensor_name, t)
        return GLOBAL_DEFAULTS[self.config.merge_method][name] if value is None else value

    def _per_model(self, name: str, ref: str, tensor_name: str, t: float):
        own = dict(self.inputs.models).get(ref)
        value = first_value([own, self.inputs.slice_parameters, self.config.parameters],
                            name, tensor_name, t)
        if value is None:
            value = TENSOR_DEFAULTS[self.config.merge_method][name]
        if value is None:
            raise UsageError(f"model {ref!r} has no {name} for tensor {tensor_name!r} "
                             "(mergekit requires one)")
        return value

    def _combine(self, name: str, t: float, models: dict, base: torch.Tensor | None
                 ) -> torch.Tensor:
        compute = {ref: x.to(self.device, torch.float32) for ref, x in models.items()}
        weights = {ref: float(self._per_model("weight", ref, name, t)) for ref in compute
                   if ref != self.inputs.base or self.config.merge_method == "linear"}
        if self.config.merge_method == "linear":
            return self._linear(name, t, list(compute.values()), list(weights.values()))
        anchor = base.to(self.device, torch.float32)
        return self._task_vectors(name, t, anchor, {r: compute[r] for r in weights}, weights)

    def _linear(self, name: str, t: float, tensors: list, weights: list[float]
                ) -> torch.Tensor:
        if not self._global("normalize", name, t):
            return weighted_sum(tensors, weights)
        total = sum(weights)
        if total == 0:
            raise UsageError(f"linear: the weights of tensor {name!r} sum to 0 (normalize)")
        if len(tensors) == 2:  # darwin's interpolation, (1 - r) A + r B
            share = weights[1] if abs(total - 1.0) < SUM_OF_ONE else weights[1] / total
            return linear(tensors[0], tensors[1], share)
        return weighted_sum(tensors, weights) / total

    def _task_vectors(self, name: str, t: float, base: torch.Tensor, models: dict,
                      weights: dict) -> torch.Tensor:
        if not models:
            return base
        if self.memo is None or name not in self.memo:
            merged = self._merged_task_vectors(name, t, base, models, weights)
            if self.memo is not None:
                self.memo[name] = merged
        merged = merged if self.memo is None else self.memo[name]
        return base + merged * float(self._global("lambda", name, t))

    def _merged_task_vectors(self, name: str, t: float, base: torch.Tensor, models: dict,
                             weights: dict) -> torch.Tensor:
        """The models' task vectors, trimmed and combined by the method, before lambda."""
        method = self.config.merge_method
        rescale = bool(self._global("rescale", name, t))
        deltas = []
        for ref, tensor in models.items():
            delta = tensor - base
            density = float(self._per_model("density", ref, name, t))
            if method == "ties":
                delta = magnitude_trim_fast(delta, density, rescale)
            elif method == "dare_ties":
                delta = dare(delta, density, dare_generator(self.key, name, ref), rescale)
            deltas.append(delta)
        normalize = bool(self._global("normalize", name, t))
        if method in ("ties", "dare_ties"):
            if any(w < 0 for w in weights.values()):
                raise UsageError(f"{method}: negative weights are not supported (tensor "
                                 f"{name!r})")
            return ties_merge(deltas, list(weights.values()), disjoint_mean=normalize,
                              tie_sign=MERGEKIT_TIE_SIGN)
        merged = weighted_sum(deltas, list(weights.values()))
        divisor = sum(weights.values())
        if normalize and abs(divisor) >= TINY_DIVISOR:
            merged = merged / divisor
        return merged


def merge_config_state(config: MergekitConfig, tensors: dict[str, dict[str, torch.Tensor]],
                       infos: list[TensorInfo], num_layers: int | None, *,
                       device: torch.device, dare_key: str | None = None,
                       memo: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A config's child in memory (the search's baselines, evolve/baselines.py): the config
    names its models by the keys of `tensors` (e.g. father, mother, base), each a whole
    state dict; every tensor of `infos` is merged as `merge_from_config` merges it."""
    merger = TensorMerger(config, resolve_inputs(config), lambda ref, name: tensors[ref][name],
                          device, None, num_layers, dare_key, memo)
    return {info.name: merger.merge(info) for info in infos}
