"""Layer-by-layer access to a causal LM's decoder: trace once, then skip any layer cheaply.

`trace_decoder` runs the model once with a forward pre-hook on every decoder layer
that records the layer's exact call (hidden-state input, plus every other argument:
position embeddings, attention masks, Gemma 4's per-layer input, ...). With that
record, "the final hidden state when layer l is skipped" (layer l's output := its
input, i.e. its residual contribution removed) only needs layers l+1..L-1 re-run
from the cached input of layer l: about L^2/2 layer passes for all L skips instead
of the L^2 of one full forward per skipped layer (`skip_hidden_naive`, kept as the
reference the tests compare against).

Families. Llama and Gemma 3 decoders are plain stacks. Gemma 4's text decoder sits
inside `Gemma4ForConditionalGeneration` (found with `get_decoder()`); its per-layer
embedding input is an ordinary positional argument of each layer call, so it is
recorded and replayed like the rest. Gemma 4's shared-KV layers (the last
`num_kv_shared_layers`) do not compute keys/values: they read those that the last
non-shared layer of the same attention type stored in a `KVSharingDict` passed to
every layer. We define skipping layer l as removing its residual contribution only:
a skipped layer that stores K/V still publishes them (computed from its input, which
skipping it does not change). So a re-run from layer l+1 starts from a copy of the
K/V the full run stored; any storing layer after l is re-run and overwrites its
entry before a shared layer reads it. The naive reference does the same thing by
letting the skipped layer run and replacing only its output.
"""

from __future__ import annotations

from collections import UserDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DecoderTrace:
    """One recorded forward pass of a decoder, enough to replay any suffix of it."""

    inputs: list[torch.Tensor]  # hidden-state input of each layer
    calls: list[tuple[tuple, dict]]  # the other positional args and kwargs of each call
    last_output: torch.Tensor  # output of the last layer, before the final norm
    final: torch.Tensor  # the decoder's final hidden state (after its norm)
    logits: torch.Tensor | None  # the LM head's output, when asked for

    @property
    def num_layers(self) -> int:
        return len(self.inputs)

    def layer_output(self, layer: int) -> torch.Tensor:
        """Hidden state after `layer` (before the final norm for the last one)."""
        return self.inputs[layer + 1] if layer + 1 < self.num_layers else self.last_output


def decoder_of(model) -> torch.nn.Module:
    """The text decoder (the module with `.layers` and `.norm`) of a causal LM."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or not hasattr(decoder, "layers") or not hasattr(decoder, "norm"):
        from ..errors import ModelFormatError

        raise ModelFormatError(f"{type(model).__name__}: no decoder with layers and a final "
                               "norm found; this architecture is not supported by the scan")
    return decoder


def _hidden(output) -> torch.Tensor:
    """Decoder layers return a tensor (Llama, Gemma 4) or a tuple led by it (Gemma 3)."""
    return output[0] if isinstance(output, tuple) else output


def _split_call(args: tuple, kwargs: dict) -> tuple[torch.Tensor, tuple, dict]:
    if args:
        return args[0], tuple(args[1:]), dict(kwargs)
    rest = dict(kwargs)
    return rest.pop("hidden_states"), (), rest


def _run_layer(layer, hidden: torch.Tensor, call: tuple[tuple, dict],
               shared_kv: UserDict | None) -> torch.Tensor:
    args, kwargs = call
    if "shared_kv_states" in kwargs:
        kwargs = {**kwargs, "shared_kv_states": shared_kv}
    return _hidden(layer(hidden, *args, **kwargs))


@torch.no_grad()
def trace_decoder(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  with_logits: bool = False) -> DecoderTrace:
    """Run the model once, recording every decoder layer's call.

    With `with_logits` the whole model runs (the health check needs the LM head's
    output for its loss); otherwise only the decoder does.
    """
    decoder = decoder_of(model)
    layers = list(decoder.layers)
    inputs: list[torch.Tensor] = [None] * len(layers)
    calls: list[tuple[tuple, dict]] = [None] * len(layers)
    captured: dict[str, torch.Tensor] = {}

    def pre_hook(index):
        def hook(module, args, kwargs):
            hidden, rest, kw = _split_call(args, kwargs)
            inputs[index] = hidden.clone()  # some layers scale their output in place
            calls[index] = (rest, kw)
        return hook

    def last_hook(module, args, output):
        captured["last"] = _hidden(output).clone()

    def norm_hook(module, args, output):
        captured["final"] = output.clone()

    handles = [layer.register_forward_pre_hook(pre_hook(i), with_kwargs=True)
               for i, layer in enumerate(layers)]
    handles.append(layers[-1].register_forward_hook(last_hook))
    handles.append(decoder.norm.register_forward_hook(norm_hook))
    try:
        runner = model if with_logits else decoder
        output = runner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    logits = output.logits if with_logits else None
    return DecoderTrace(inputs, calls, captured["last"], captured["final"], logits)


def _shared_kv_after(trace: DecoderTrace) -> UserDict | None:
    """A fresh copy of the K/V store as the full run left it (Gemma 4), else None."""
    for _, kwargs in trace.calls:
        store = kwargs.get("shared_kv_states")
        if store is not None:
            return type(store)(dict(store))
    return None


@torch.no_grad()
def skip_hidden(model, trace: DecoderTrace, layer: int) -> torch.Tensor:
    """Final hidden state with `layer` skipped, re-running only the layers after it."""
    decoder = decoder_of(model)
    layers = list(decoder.layers)
    if not 0 <= layer < len(layers):
        raise IndexError(f"layer {layer} outside 0..{len(layers) - 1}")
    hidden = trace.inputs[layer]
    shared_kv = _shared_kv_after(trace)
    for index in range(layer + 1, len(layers)):
        hidden = _run_layer(layers[index], hidden, trace.calls[index], shared_kv)
    return decoder.norm(hidden)


@torch.no_grad()
def skip_hidden_naive(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      layer: int) -> torch.Tensor:
    """Reference: a full forward pass in which `layer`'s output is replaced by its input."""
    decoder = decoder_of(model)

    def identity(module, args, kwargs, output):
        hidden, _, _ = _split_call(args, kwargs)
        if isinstance(output, tuple):
            return (hidden, *output[1:])
        return hidden

    handle = decoder.layers[layer].register_forward_hook(identity, with_kwargs=True)
    try:
        output = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        handle.remove()
    return output.last_hidden_state


def token_cosine_distance(full: torch.Tensor, other: torch.Tensor,
                          attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Per prompt: mean over its real (unpadded) tokens of 1 - cos(full, other).

    Computed in float32; clamped at 0 so rounding never gives a negative distance.
    """
    cos = F.cosine_similarity(full.float(), other.float(), dim=-1, eps=1e-8)
    dist = (1.0 - cos).clamp_min(0.0)
    if attention_mask is None:
        return dist.mean(dim=-1)
    mask = attention_mask.to(dist.dtype)
    return (dist * mask).sum(dim=-1) / mask.sum(dim=-1).clamp_min(1.0)


@torch.no_grad()
def layer_skip_distances(model, input_ids: torch.Tensor,
                         attention_mask: torch.Tensor | None = None,
                         method: str = "cached") -> torch.Tensor:
    """Cosine distance of every layer's skip, shape [num_layers, batch] (per prompt).

    `method` is "cached" (one trace, then suffix re-runs) or "naive" (one full forward
    per skipped layer); both give the same numbers, the first at about half the cost.
    """
    if method == "cached":
        trace = trace_decoder(model, input_ids, attention_mask)
        rows = [token_cosine_distance(trace.final, skip_hidden(model, trace, layer),
                                      attention_mask) for layer in range(trace.num_layers)]
        return torch.stack(rows)
    if method == "naive":
        decoder = decoder_of(model)
        full = decoder(input_ids=input_ids, attention_mask=attention_mask,
                       use_cache=False).last_hidden_state
        rows = [token_cosine_distance(
            full, skip_hidden_naive(model, input_ids, attention_mask, layer), attention_mask)
            for layer in range(len(decoder.layers))]
        return torch.stack(rows)
    raise ValueError(f"unknown method {method!r} (cached or naive)")
