"""Run a mergekit config with darwin: the config compiled to the merge description
(`ConfigSteps`: its parameters evaluated for every tensor of the reference model, the base
else the first model) and run by the one executor (merge/execute.py), to disk or in
memory: float32 arithmetic, NaN/Inf checks, the child streamed into its shards inside a
temporary folder renamed into place only when complete (docs/MERGE.md, "mergekit
interop" and "One merge description").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..arch import Taxonomy
from ..arch.rules import CLIP_KINDS, MergeMode
from ..arch.taxonomy import TensorInfo
from ..errors import IncompatibleModelsError, ModelFormatError, UsageError
from ..inspection import require_mergeable
from ..io import ModelSource
from ..io.dtypes import main_dtype, parse_dtype
from ..io.loading import resolve_device
from ..io.model_ref import ModelRef, resolve_model
from ..io.stream import TensorReader
from ..io.writer import DEFAULT_SHARD_BYTES, atomic_output_dir, copy_side_files, write_config
from ..merge.execute import cpu_threads, merge_in_memory, write_child_tensors
from ..merge.spec import MERGEKIT_TIE_SIGN, Contribution, MergeSpec, StepKind, TensorStep, Trim
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


def model_folder(reference: str, allow_pickle: bool = False) -> ModelRef:
    """A model of the config: a local folder or a Hub id (`org/name[@revision]`, resolved
    through huggingface_hub's cache, io/model_ref.py); LoRA references are refused."""
    if "+" in reference and not Path(reference).exists():
        raise UsageError(f"model {reference!r}: LoRA references (model+lora) are not supported")
    return resolve_model(reference, allow_pickle=allow_pickle)


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
            sources[ref] = ModelSource(model_folder(ref, allow_pickle), **trust)
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
        infos = taxonomy.classify_all(reference.specs())
        spec = ConfigSteps(config, inputs, taxonomy.num_layers).spec(
            infos, {s.name: s.shape for s in reference.specs()}, config_hash(config))
        with atomic_output_dir(out, overwrite=overwrite) as tmp, cpu_threads(threads):
            # plain file reads: a memory map's touched pages would stay resident until the
            # end (docs/MERGE.md, "Streaming and memory")
            readers = {m: TensorReader(sources[m]) for m in spec.models}
            try:
                write_child_tensors(spec, readers, tmp, out_dtype, resolve_device(device),
                                    shard_size, progress=progress)
            finally:
                for reader in readers.values():
                    reader.close()
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
        return model_folder(inputs.base).path
    if tokenizer in [n for n, _ in inputs.models] or tokenizer == inputs.base:
        return model_folder(tokenizer).path
    raise UsageError(f"tokenizer_source {tokenizer!r}: darwin keeps one model's tokenizer; "
                     "name one of the models or `base` (no union)")


class ConfigSteps:
    """A config's parameters evaluated for each tensor (model, slice and global levels, a
    gradient over the layers), as the tensor's step of the merge description
    (merge/spec.py): the config compiled, so one executor runs it."""

    def __init__(self, config: MergekitConfig, inputs: Inputs, num_layers: int | None):
        self.config, self.inputs, self.num_layers = config, inputs, num_layers
        self.method = config.merge_method

    def step(self, info: TensorInfo, shape: tuple[int, ...]) -> TensorStep:
        """The tensor's step: copied (exact), the looser bound of every model (clipping
        buffers, as in every darwin merge: interpolating Inf gives NaN), else the method."""
        name = info.name
        common = dict(name=name, shape=tuple(shape))
        if info.merge_kind == MergeMode.EXACT:
            return TensorStep(kind=StepKind.EXACT, **common)
        if info.merge_kind in CLIP_KINDS:
            models = tuple(Contribution(m) for m in self.models())
            return TensorStep(kind=StepKind(info.merge_kind), contributions=models,
                              bounds=True, **common)
        t = layer_position(info, self.num_layers)
        weighted = [ref for ref, _ in self.inputs.models
                    if ref != self.inputs.base or self.method == "linear"]
        weights = {ref: float(self._per_model("weight", ref, name, t)) for ref in weighted}
        normalize = bool(self._global("normalize", name, t))
        if self.method == "linear":
            if normalize and sum(weights.values()) == 0:
                raise UsageError(f"linear: the weights of tensor {name!r} sum to 0 "
                                 "(normalize)")
            return TensorStep(kind=StepKind.INTERPOLATE, mean=normalize, contributions=tuple(
                Contribution(ref, w) for ref, w in weights.items()), **common)
        elect = self.method in ("ties", "dare_ties")
        if elect and any(w < 0 for w in weights.values()):
            raise UsageError(f"{self.method}: negative weights are not supported (tensor "
                             f"{name!r})")
        trim = {"ties": Trim.MAGNITUDE, "dare_ties": Trim.DARE}.get(self.method, Trim.NONE)
        contributions = tuple(
            Contribution(ref, w, float(self._per_model("density", ref, name, t)), trim)
            for ref, w in weights.items())
        return TensorStep(kind=StepKind.TASK_VECTORS, base=self.inputs.base,
                          contributions=contributions, sign_election=elect,
                          tie_sign=MERGEKIT_TIE_SIGN, mean=normalize,
                          rescale=bool(self._global("rescale", name, t)),
                          scale=float(self._global("lambda", name, t)), **common)

    def models(self) -> tuple[str, ...]:
        """Every model the config reads, in order: its models, then the base if unlisted."""
        names = tuple(ref for ref, _ in self.inputs.models)
        base = self.inputs.base
        return names + ((base,) if base is not None and base not in names else ())

    def spec(self, infos: list[TensorInfo], shapes: dict[str, tuple[int, ...]], seed: str
             ) -> MergeSpec:
        """The whole config as a merge description; the reference model (whose dtype a
        tensor keeps) is the base, else the first model."""
        return MergeSpec(models=self.models(), seed=seed,
                         reference=self.inputs.base or self.inputs.models[0][0],
                         steps=tuple(self.step(i, shapes.get(i.name, ())) for i in infos))

    def _global(self, name: str, tensor_name: str, t: float):
        levels = [self.inputs.slice_parameters, self.config.parameters]
        value = first_value(levels, name, tensor_name, t)
        return GLOBAL_DEFAULTS[self.method][name] if value is None else value

    def _per_model(self, name: str, ref: str, tensor_name: str, t: float):
        own = dict(self.inputs.models).get(ref)
        value = first_value([own, self.inputs.slice_parameters, self.config.parameters],
                            name, tensor_name, t)
        if value is None:
            value = TENSOR_DEFAULTS[self.method][name]
        if value is None:
            raise UsageError(f"model {ref!r} has no {name} for tensor {tensor_name!r} "
                             "(mergekit requires one)")
        return value


def merge_config_state(config: MergekitConfig, tensors: dict[str, dict[str, torch.Tensor]],
                       infos: list[TensorInfo], num_layers: int | None, *,
                       dare_key: str | None = None,
                       memo: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A config's child in memory (the search's baselines, evolve/baselines.py): the config
    names its models by the keys of `tensors` (e.g. father, mother, base), each a whole
    state dict on one device; every tensor of `infos` is merged as `merge_from_config`
    merges it. DARE's masks are seeded by `dare_key` (default: the config's hash). With
    `memo`, each tensor's merged task vectors before `lambda` are kept and reused: share
    one memo only between configs that differ in `lambda` alone (the tuned baselines'
    grid); `base + merged * lambda` is computed the same way either way, so the child is
    the same bits."""
    steps = ConfigSteps(config, resolve_inputs(config), num_layers)
    reference = tensors[steps.models()[0]]
    shapes = {i.name: tuple(reference[i.name].shape) for i in infos}
    spec = steps.spec(infos, shapes, dare_key or config_hash(config))
    return merge_in_memory(spec, lambda model, name: tensors[model][name], memo=memo)
