"""Score an in-memory model on tasks: the library API the search and the CLI share.

`evaluate(model, tokenizer, ["arc_easy"], split="search", limit=50)` returns, per task, a
`TaskResult` (eval/results.py): its scores, their standard errors, n, its primary `metric`
(tasks.yaml, `.primary`) and direction,
the item ids scored with each item's primary score (`item_scores`, for paired
statistics and racing), and, for the log-likelihood tasks, each item's gold continuation's
log-probability divided by its length in characters (`item_gold_logprobs`:
tokenizer-independent, continuous), their mean (`mean_gold_logprob`) and the mean of their
clipped values (`mean_clipped_gold_logprob`), so the search can rank two candidates with the
same accuracy. Nothing is written to disk and nothing is cached between calls.
"""

from __future__ import annotations

from contextlib import contextmanager

from ..errors import UsageError
from ..progress import TaskCounter, progress_bar
from . import metrics
from .generate import generate, supports_thinking
from .loglik import encode_groups, score_groups
from .results import GENERATION_FIELDS, TaskResult, gold_logprob_means
from .samples import sample_records
from .tasks import Item, Task, resolve_tasks, select_items

LOGLIK_KINDS = ("multiple_choice", "lambada", "greedy_continuation")


def evaluate(model, tokenizer, tasks: list[str] | str, *, split: str = "all",
             limit: int | None = None, batch_size: int = 16, device=None,
             task_file=None, samples: int = 1, thinking: bool = False, seed: int = 0,
             max_new_tokens: int | None = None, progress: bool = False,
             skip: int = 0, log_samples: bool = False) -> dict[str, TaskResult]:
    """Scores of `model` on each task (see the module docstring), keyed by task name.

    `skip` leaves out the first items of the `limit` selected (racing scores a candidate
    on items [skip, limit) after [0, skip)).
    `samples`, `thinking`, `seed` and `max_new_tokens` (default: the task's own) apply to
    generative tasks only. `log_samples` adds each task's per-item records in lm-eval's
    `--log_samples` shape under `logged_samples` (eval/samples.py).
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
    if samples < 1:
        raise UsageError(f"--samples must be at least 1 (got {samples})")
    resolved = resolve_tasks(tasks, task_file)
    results = {}
    with _eval_mode(model), progress_bar(progress, transient=True) as bars:
        for task in resolved:
            items = select_items(task, split, limit)[skip:]
            if not items:
                raise UsageError(f"task {task.name}: no items in split {split!r}")
            bar = TaskCounter(bars, task.label) if progress else None
            if task.kind in LOGLIK_KINDS:
                result = _loglik_task(model, tokenizer, task, items, batch_size, device, bar)
            else:
                result = _generative_task(model, tokenizer, task, items, batch_size, device, bar,
                                          samples=samples, thinking=thinking, seed=seed,
                                          max_new_tokens=max_new_tokens or task.max_new_tokens)
            item_scores, responses = result.pop("item_scores"), result.pop("responses")
            primary = task.primary(samples)
            result.pop("mean_gold_logprob", None)  # recomputed from the items' values
            logprobs = result.pop("item_gold_logprobs", None)
            generation = {k: result.pop(k) for k in GENERATION_FIELDS if k in result}
            results[task.name] = TaskResult(
                kind=task.kind, split=split, n=len(items), metric=primary,
                higher_is_better=task.higher_is_better, metrics=result,
                **gold_logprob_means(logprobs), item_ids=[it.id for it in items],
                item_scores=item_scores[primary], item_gold_logprobs=logprobs,
                generation=generation, logged_samples=sample_records(
                    task, items, responses, item_scores) if log_samples else None)
    return results


@contextmanager
def _eval_mode(model):
    """Eval mode for the call (Gemma needs it), restoring the caller's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _progress(bar):
    return None if bar is None else bar.update


def loglik_requests(task: Task, items: list[Item]) -> list[tuple[str, list[str]]]:
    """(context, [continuation, ...]) strings for each item, as lm-eval builds them."""
    requests = []
    for it in items:
        context = task.prompt.format(**it.doc)
        if task.kind == "multiple_choice":
            requests.append((context, [" " + c for c in it.doc["choices"]]))
        elif task.kind == "lambada":
            requests.append((context, [" " + it.doc["continuation"]]))
        else:
            requests.append((context, [it.doc["continuation"]]))
    return requests


def _loglik_task(model, tokenizer, task, items, batch_size, device, bar) -> dict:
    requests = loglik_requests(task, items)
    groups = encode_groups(tokenizer, requests)
    if bar is not None:
        bar.set_total(sum(len(g.continuations) for g in groups))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = score_groups(model, groups, batch_size, device, pad, _progress(bar))
    responses = [{"arguments": [(context, c) for c in continuations],
                  "resps": [[(s.logprob, s.is_greedy)] for s in item],
                  "filtered_resps": [(s.logprob, s.is_greedy) for s in item]}
                 for (context, continuations), item in zip(requests, scores, strict=True)]
    if task.kind == "multiple_choice":
        return multiple_choice_metrics([it.doc for it in items], scores) | {
            "responses": responses}
    gold_lengths = [len(it.doc["continuation"].strip()) or 1 for it in items]
    logliks = [s[0].logprob for s in scores]
    greedy = [float(s[0].is_greedy) for s in scores]
    result = {"acc": metrics.mean(greedy), "acc_stderr": metrics.mean_stderr(greedy),
              "item_scores": {"acc": greedy}, "responses": responses}
    if task.kind == "lambada":
        ppl = metrics.perplexity(logliks)
        se = metrics.mean_stderr(logliks)
        result.update(perplexity=ppl, perplexity_stderr=None if se is None else ppl * se)
    result["item_gold_logprobs"] = [ll / n for ll, n in zip(logliks, gold_lengths,
                                                            strict=True)]
    return result


def multiple_choice_metrics(docs: list[dict], scores) -> dict:
    """acc, acc_norm (+ stderrs) and the per-character gold log-prob of scored items (each
    item's, and their mean)."""
    acc, acc_norm, gold_lp = [], [], []
    for doc, item_scores in zip(docs, scores, strict=True):
        logprobs = [s.logprob for s in item_scores]
        pred, pred_norm = metrics.choose(logprobs, doc["choices"])
        acc.append(float(pred == doc["gold"]))
        acc_norm.append(float(pred_norm == doc["gold"]))
        gold_lp.append(logprobs[doc["gold"]] / len(doc["choices"][doc["gold"]]))
    return {"acc": metrics.mean(acc), "acc_stderr": metrics.mean_stderr(acc),
            "acc_norm": metrics.mean(acc_norm), "acc_norm_stderr": metrics.mean_stderr(acc_norm),
            "mean_gold_logprob": metrics.mean(gold_lp), "item_gold_logprobs": gold_lp,
            "item_scores": {"acc": acc, "acc_norm": acc_norm}}


def mc_gen_prompt(doc: dict) -> str:
    """A lettered-options prompt for generative multiple choice."""
    question = doc["query"].removeprefix("Question: ").strip()
    options = "\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(doc["choices"]))
    return (f"{question}\n\n{options}\n\n"
            "Answer with the letter of the correct option, in the form \"The answer is X\".")


def _generative_task(model, tokenizer, task, items, batch_size, device, bar, *, samples,
                     thinking, seed, max_new_tokens) -> dict:
    if task.kind == "gsm8k":
        prompts = [task.prompt.format(**it.doc) for it in items]
        golds = [metrics.gsm8k_gold(it.doc["answer"]) for it in items]
    else:
        prompts = [mc_gen_prompt(it.doc) for it in items]
        golds = [chr(ord("A") + it.doc["gold"]) for it in items]
    if bar is not None:
        bar.set_total(len(prompts))
    texts = generate(model, tokenizer, prompts, samples=samples,
                     max_new_tokens=max_new_tokens, thinking=thinking,
                     batch_size=batch_size, seed=seed, device=device, progress=_progress(bar))
    answers = [[_extract(task, t, it.doc) for t in gens] for it, gens in zip(items, texts,
                                                                             strict=True)]
    settings = {"max_gen_toks": max_new_tokens, "do_sample": samples > 1,
                "enable_thinking": thinking}
    responses = [{"arguments": [(prompt, settings)], "resps": [gens],
                  "filtered_resps": [found[0] if samples == 1 else found]}
                 for prompt, gens, found in zip(prompts, texts, answers, strict=True)]
    return generative_metrics(answers, golds, samples) | {
        "thinking": thinking, "thinking_supported": supports_thinking(tokenizer),
        "samples": samples, "first_generation": texts[0][0], "responses": responses}


def _extract(task, text: str, doc: dict) -> str | None:
    if task.kind == "gsm8k":
        return metrics.extract_number(text)
    return metrics.extract_letter(text, len(doc["choices"]))


def generative_metrics(answers: list[list[str | None]], golds: list[str | None],
                       samples: int) -> dict:
    """exact_match of the first sample, maj@K when K > 1, and how many did not parse."""
    first = [float(a[0] is not None and a[0] == g) for a, g in zip(answers, golds, strict=True)]
    result = {"exact_match": metrics.mean(first), "exact_match_stderr": metrics.mean_stderr(first),
              "unparsed": sum(a[0] is None for a in answers),
              "item_scores": {"exact_match": first}}
    if samples > 1:
        voted = [metrics.majority_vote(a) for a in answers]
        maj = [float(v is not None and v == g) for v, g in zip(voted, golds, strict=True)]
        result[f"maj@{samples}"] = metrics.mean(maj)
        result[f"maj@{samples}_stderr"] = metrics.mean_stderr(maj)
        result["item_scores"][f"maj@{samples}"] = maj
    return result
