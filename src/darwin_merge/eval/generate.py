"""Generative answers through the chat template: greedy, or K samples for majority voting.

Prompts go through `tokenizer.apply_chat_template(..., enable_thinking=...)` when the
tokenizer has a template (templates that do not use `enable_thinking` ignore it); a
tokenizer without a template gets the raw prompt. Prompts are sorted by length and
left-padded by hand, so the caller's tokenizer is never modified.
"""

from __future__ import annotations

import torch

from .loglik import left_pad


def supports_thinking(tokenizer) -> bool:
    """Whether the chat template reads `enable_thinking` (Qwen3-, Gemma-4-style templates)."""
    return "enable_thinking" in str(getattr(tokenizer, "chat_template", None) or "")


def render_prompt(tokenizer, prompt: str, thinking: bool) -> list[int]:
    """Token ids of one user turn followed by the assistant's generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        return tokenizer(prompt)["input_ids"]
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=thinking)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _stop_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[str], *, samples: int = 1,
             max_new_tokens: int = 256, thinking: bool = False, batch_size: int = 8,
             temperature: float = 0.7, seed: int = 0, device=None,
             progress=None) -> list[list[str]]:
    """`samples` generations per prompt (greedy when 1, sampled otherwise), in prompt order.

    Sampling is seeded with `seed` through torch's global generator (what `generate` uses),
    whose state is the caller's again when this returns.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    encoded = [render_prompt(tokenizer, p, thinking) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = _stop_ids(model, tokenizer)
    results: list[list[str]] = [[] for _ in prompts]
    sampling = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0) \
        if samples > 1 else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    # sampling draws from torch's global generator: seeded here, the caller's state
    # restored after (fork_rng), so a run's other random draws do not depend on this call
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [],
                               enabled=samples > 1):
        if samples > 1:
            torch.manual_seed(seed)
        for start in range(0, len(order), max(1, batch_size)):
            batch = order[start: start + batch_size]
            ids, mask = left_pad([encoded[i] for i in batch], pad, device)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 num_return_sequences=samples, pad_token_id=pad, use_cache=True,
                                 eos_token_id=sorted(stops), **sampling)
            new = out[:, ids.shape[1]:].tolist()
            for row, tokens in enumerate(new):
                results[batch[row // samples]].append(_decode(tokenizer, tokens, stops | {pad}))
            if progress is not None:
                progress(len(batch))
    return results


def _decode(tokenizer, tokens: list[int], stops: set[int]) -> str:
    end = next((i for i, t in enumerate(tokens) if t in stops), len(tokens))
    return tokenizer.decode(tokens[:end], skip_special_tokens=False)

