"""What each command holds in memory at its peak, added up before any work starts.

A plan lists its parts (models, merged states, activations, the Python runtime) in
bytes, from the safetensors headers at the requested dtype and the models' configs.
`check` compares the total with the memory free now: on CPU all of it against
`MemAvailable`; with `--device cuda` the models and activations against the GPU's
free memory and the runtime plus one model (read through host memory on its way to
the GPU) against the host's. A plan that does not fit is refused with one line
(`ResourceError`, exit 8) saying how much is needed. docs/BENCHMARKS.md ("Memory
plan") compares the plans with the peak RSS measured on SmolLM2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .arch.model_config import text_config
from .io import ModelSource
from .io.dtypes import parse_dtype
from .io.loading import resolve_device
from .resources import human_bytes, require_memory, tensor_bytes

# Python, torch, transformers, optuna and Darwin imported, before any model: the peak
# RSS of `import darwin_merge.evolve.run` measured on Linux (514 MB), rounded up.
RUNTIME_BYTES = 550_000_000
# Evaluation rows (a prompt and its answer) rarely exceed this many tokens; the
# forward pass of a batch holds its logits and their log-softmax.
EVAL_TOKENS = 128
LOGIT_COPIES = 2
HEALTH_BATCH = 8  # the search's health check runs at check_health's default batch size
# A search's health checks keep both parents' layer outputs on the probes (measured once)
# when they take at most this; above it each check runs the parents again.
PARENT_STATES_MAX_BYTES = 2 * 1024 ** 3


@dataclass(frozen=True)
class ModelShape:
    """What a plan needs to know of a model folder."""

    nbytes: int  # all tensors at the requested dtype
    vocab: int
    hidden: int
    layers: int


def model_shape(folder: str | Path, dtype: str | None) -> ModelShape:
    cast = parse_dtype(dtype) if dtype else None
    with ModelSource(folder) as source:
        nbytes = tensor_bytes(source.specs(), cast)
        config = source.config
    text = text_config(config)
    return ModelShape(nbytes, int(text.get("vocab_size", 0)), int(text.get("hidden_size", 0)),
                      int(text.get("num_hidden_layers", 0)))


@dataclass(frozen=True)
class MemoryPlan:
    """A command's peak: named parts on the device, and the runtime on the host."""

    command: str
    parts: tuple[tuple[str, int], ...]
    device: str = "cpu"
    runtime: int = RUNTIME_BYTES

    @property
    def device_bytes(self) -> int:
        return sum(nbytes for _, nbytes in self.parts)

    @property
    def total(self) -> int:
        """Bytes at the peak, everything on one machine (the CPU case)."""
        return self.device_bytes + self.runtime

    def describe(self) -> str:
        parts = [(what, n) for what, n in self.parts] + [("Python runtime", self.runtime)]
        return ", ".join(f"{what} {human_bytes(n)}" for what, n in parts)

    def check(self) -> None:
        """ResourceError (one line, how much is needed) when the peak will not fit."""
        target = resolve_device(self.device)
        what = f"`darwin {self.command}` ({self.describe()})"
        if target.type == "cpu":
            require_memory(self.total, target, what)
            return
        require_memory(self.device_bytes, target, what)
        largest = max(n for _, n in self.parts)
        require_memory(self.runtime + largest, torch.device("cpu"),
                       f"`darwin {self.command}` on the host (runtime and one model in transit)")


def logits_bytes(shape: ModelShape, batch_size: int, tokens: int) -> int:
    return batch_size * tokens * shape.vocab * 4 * LOGIT_COPIES


def trace_bytes(shape: ModelShape, batch_size: int, tokens: int) -> int:
    """A traced forward pass: every layer's input kept (float32), plus the logits."""
    return (shape.layers + 2) * batch_size * tokens * shape.hidden * 4 \
        + logits_bytes(shape, batch_size, tokens)


def parent_states_bytes(father, dtype: str | None, prompts: int, max_tokens: int) -> int:
    """Both parents' output at every decoder layer for `prompts` probes of at most
    `max_tokens` tokens (health/check.py's ParentReference)."""
    shape = model_shape(father, dtype)
    return 2 * shape.layers * prompts * max_tokens * shape.hidden * 4


def health_plan(child, father, mother, *, base=None, device: str = "cpu",
                dtype: str = "float32", batch_size: int = 8,
                max_tokens: int = 64) -> MemoryPlan:
    """`darwin health`: the three models (four with a base) at once, and one traced batch of
    each."""
    models = (("child", child), ("father", father), ("mother", mother), ("base", base))
    shapes = {role: model_shape(path, dtype) for role, path in models if path is not None}
    traces = sum(trace_bytes(s, batch_size, max_tokens) for s in shapes.values())
    held = "child, father, mother and base" if base is not None else "child, father and mother"
    return MemoryPlan("health", ((held, sum(s.nbytes for s in shapes.values())),
                                 ("traced forward passes", traces)), device)


def kept_parent_states_bytes(recipe) -> int:
    """What an evolve recipe's health checks keep of the parents (their probe states), 0
    when over PARENT_STATES_MAX_BYTES (each check then runs the parents again)."""
    from .scan.probes import load_probes

    prompts = sum(len(texts[:recipe.probe_max_prompts]) for texts in
                  load_probes(recipe.probes).values())
    size = parent_states_bytes(recipe.father, recipe.forward_dtype, prompts,
                               recipe.probe_max_tokens)
    return size if size <= PARENT_STATES_MAX_BYTES else 0


def evolve_plan(recipe) -> MemoryPlan:
    """`darwin evolve`: the parents (and base) held for the whole run and the scorer's
    model; at the end, on top, either the health check's three models (four with a base:
    it is measured beside the parents) or the child's and two baselines' merged states (the
    larger; the holdout merges a baseline when it loads it), with the tuned baselines' kept
    task vectors (one model in float32, mergekit/standard.py), the parents' probe states the
    health checks keep (when kept), and one evaluation batch's logits."""
    father = model_shape(recipe.father, recipe.dtype)
    kept = kept_parent_states_bytes(recipe)
    held = [model_shape(p, recipe.dtype).nbytes
            for p in (recipe.father, recipe.mother, recipe.base) if p is not None]
    checked = 3 if recipe.base is None else 4  # the health check's models
    activations = max(checked * trace_bytes(father, HEALTH_BATCH, recipe.probe_max_tokens),
                      logits_bytes(father, recipe.batch_size, EVAL_TOKENS))
    at_end = "health check or child and baselines (3 models)" if checked == 3 else \
        "health check (4 models) or child and baselines (3)"
    parts = ((f"parents ({len(held)} models)", sum(held)), ("the scorer's model", father.nbytes),
             (at_end, checked * father.nbytes),
             *([("the tuned baselines' task vectors (float32)",
                 model_shape(recipe.father, "float32").nbytes)]
               if recipe.baselines == "tuned" else []),
             *([("the parents' probe states (health checks)", kept)] if kept else []),
             ("activations", activations))
    return MemoryPlan("evolve", parts, recipe.device)
