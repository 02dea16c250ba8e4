"""Batched log-likelihoods of continuations, each context run once (shared prefix).

A request group is one context and the continuations scored after it (the choices of a
question). Tokenisation follows lm-evaluation-harness: trailing spaces of the context
move to the continuation, and the continuation's tokens are `enc(ctx + cont)` after the
first `len(enc(ctx))` tokens, so the model sees exactly `enc(ctx) + cont_tokens`.

Speed comes from three things: (1) the contexts of a batch run once, left-padded, and
only their last position goes through the vocabulary head; (2) their key/value cache is
repeated once per choice and only the continuation tokens run a second time; (3) groups
are sorted by length so that padding is small. Left padding (with explicit position ids)
keeps every row's tokens contiguous at the end of the cache, which is what sliding-window
layers (Gemma) need to see the same window as an unpadded run.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Group:
    """One context (token ids) and the continuations (token ids) to score after it."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Score:
    """Sum of log-probabilities of a continuation, its token count, whether it is greedy."""

    logprob: float
    n_tokens: int
    is_greedy: bool


def bos_prefix(tokenizer) -> list[int]:
    """[bos] when the tokenizer adds one by default (Gemma), else [] (as lm-eval's `hf`)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    ids = tokenizer("a")["input_ids"]
    return [bos] if ids and ids[0] == bos else []


def encode_groups(tokenizer, requests: list[tuple[str, list[str]]]) -> list[Group]:
    """Token groups for (context, [continuation, ...]) strings, split the lm-eval way."""
    prefix = bos_prefix(tokenizer)
    empty_context = prefix or [tokenizer.bos_token_id if tokenizer.bos_token_id is not None
                               else tokenizer.eos_token_id]
    pairs = [_move_spaces(ctx, cont) for ctx, conts in requests for cont in conts]
    texts = [c for c, _ in pairs] + [c + k for c, k in pairs]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    contexts, wholes = encoded[: len(pairs)], encoded[len(pairs):]
    groups, at = [], 0
    for _context_text, conts in requests:
        context, cont_ids = None, []
        for k in range(len(conts)):
            ctx_ids, whole = contexts[at + k], wholes[at + k]
            if pairs[at + k][0] == "":
                ctx_ids, cont = list(empty_context), whole
            else:
                ctx_ids, cont = prefix + ctx_ids, whole[len(ctx_ids):]
            context = context or tuple(ctx_ids)
            cont_ids.append(tuple(cont) if cont else (tokenizer.eos_token_id,))
        at += len(conts)
        groups.append(Group(context, tuple(cont_ids)))
    return groups


def _move_spaces(context: str, continuation: str) -> tuple[str, str]:
    n = len(context) - len(context.rstrip())
    return (context[:-n], context[-n:] + continuation) if n else (context, continuation)


def _batches(groups: list[Group], batch_size: int) -> list[list[int]]:
    """Group indices, longest context first, `batch_size` groups (contexts) per batch."""
    order = sorted(range(len(groups)), key=lambda i: (-len(groups[i].context),
                                                       -max(map(len, groups[i].continuations))))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def _length_chunks(rows: list[int], lengths: list[int],
                   pass_cost: int = 64) -> list[list[int]]:
    """Rows sorted by length, cut into the chunks that cost least in token slots.

    A chunk of rows costs `pass_cost` (a forward pass has a fixed price: the weights are
    read once per pass) plus rows x its longest length. The choices of one question differ
    a lot in length, so one chunk for all would be mostly padding and one per length would
    be many small passes; the optimal contiguous split (dynamic programming over the sorted
    lengths, quadratic in the few dozen rows of a batch) sits between.
    """
    order = sorted(rows, key=lambda r: -lengths[r])
    best = [0] + [None] * len(order)
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end):
            cost = best[start] + pass_cost + (end - start) * lengths[order[start]]
            if best[end] is None or cost < best[end]:
                best[end], cut[end] = cost, start
    chunks, end = [], len(order)
    while end > 0:
        chunks.append(order[cut[end]: end])
        end = cut[end]
    return chunks[::-1]


@torch.inference_mode()
def score_groups(model, groups: list[Group], batch_size: int = 16,
                 device: torch.device | str | None = None, pad_id: int = 0,
                 progress=None) -> list[list[Score]]:
    """Scores of every continuation of every group (same order), each context run once."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    results: list[list[Score] | None] = [None] * len(groups)
    for batch in _batches(groups, max(1, batch_size)):
        scores = _score_batch(model, [groups[i] for i in batch], device, pad_id)
        for i, s in zip(batch, scores, strict=True):
            results[i] = s
        if progress is not None:
            progress(sum(len(groups[i].continuations) for i in batch))
    return results


def left_pad(seqs, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded on the left, and their attention mask."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[r, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def _score_batch(model, groups: list[Group], device, pad_id: int) -> list[list[Score]]:
    ids, mask = left_pad([g.context for g in groups], pad_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                logits_to_keep=1)
    first = out.logits[:, -1].float().log_softmax(-1)  # (groups, vocab)
    rows = [(g, k) for g, group in enumerate(groups) for k in range(len(group.continuations))]
    conts = [groups[g].continuations[k] for g, k in rows]
    rest: dict[int, torch.Tensor] = {}
    longer = [r for r in range(len(rows)) if len(conts[r]) > 1]
    for chunk in _length_chunks(longer, [len(c) - 1 for c in conts]):
        logp = _continuation_logprobs(model, _selected(_cache_of(out), [rows[r][0] for r in chunk]),
                                      mask, [rows[r] for r in chunk], [conts[r] for r in chunk],
                                      device, pad_id)
        rest.update({r: logp[i] for i, r in enumerate(chunk)})
    scores: list[list[Score]] = [[] for _ in groups]
    for r, (g, _k) in enumerate(rows):
        cont = torch.tensor(conts[r], device=device)
        logp = first[g].unsqueeze(0)
        if len(cont) > 1:
            logp = torch.cat([logp, rest[r][: len(cont) - 1]])
        picked = logp.gather(-1, cont.unsqueeze(-1)).squeeze(-1)
        greedy = bool((logp.argmax(-1) == cont).all())
        scores[g].append(Score(float(picked.sum()), len(cont), greedy))
    return scores


def _selected(cache, group_rows: list[int]):
    """A cache holding the context rows `group_rows` (repeats allowed), one per choice.

    The layers are shallow copies whose tensors `batch_select_indices` replaces, so the
    context cache stays intact for the next chunk and only the selected rows are copied.
    """
    sub = copy.copy(cache)
    sub.layers = [copy.copy(layer) for layer in cache.layers]
    device = next((layer.keys.device for layer in cache.layers
                   if getattr(layer, "keys", None) is not None), None)
    sub.batch_select_indices(torch.tensor(group_rows, device=device))
    return sub


def _cache_of(out):
    cache = getattr(out, "past_key_values", None)
    return cache if cache is not None else getattr(out, "cache", None)


def _cache_kwarg(model) -> str:
    """`cache` in recent transformers 5 releases, `past_key_values` before the rename."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _continuation_logprobs(model, cache, ctx_mask, rows, conts, device, pad_id) -> torch.Tensor:
    """Log-probs after each continuation token but the last, from the repeated context cache."""
    index = torch.tensor([g for g, _ in rows], device=device)
    width = max(map(len, conts)) - 1
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, cont in enumerate(conts):
        ids[r, : len(cont) - 1] = torch.tensor(cont[:-1], dtype=torch.long)
        mask[r, : len(cont) - 1] = 1
    ids, mask = ids.to(device), mask.to(device)
    ctx_len = ctx_mask.sum(-1)[index]
    positions = ctx_len.unsqueeze(-1) + torch.arange(width, device=device)
    full_mask = torch.cat([ctx_mask[index], mask], dim=-1)
    out = model(input_ids=ids, attention_mask=full_mask, position_ids=positions,
                use_cache=True, **{_cache_kwarg(model): cache})
    return out.logits.float().log_softmax(-1)


@torch.inference_mode()
def score_unbatched(model, context: list[int], continuation: list[int]) -> Score:
    """The reference: one sequence, no padding, no cache (used by tests and as a check)."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(context) + list(continuation)], device=device)
    logits = model(input_ids=ids, use_cache=False).logits[0].float().log_softmax(-1)
    cont = torch.tensor(continuation, device=device)
    logp = logits[len(context) - 1: len(context) - 1 + len(cont)]
    picked = logp.gather(-1, cont.unsqueeze(-1)).squeeze(-1)
    return Score(float(picked.sum()), len(cont), bool((logp.argmax(-1) == cont).all()))
