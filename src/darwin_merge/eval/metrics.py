"""Scores from per-item results, computed as lm-evaluation-harness computes them.

acc and acc_norm: `argmax` over the choices (the first index wins a tie, as `np.argmax`),
acc_norm dividing each choice's summed log-prob by the length of the choice in characters
(without the leading space). The standard error of a mean is lm-eval's `mean_stderr`:
the sample standard deviation (n - 1) over sqrt(n). Perplexity is exp(-mean log-likelihood
per item); its standard error here is the delta-method estimate ppl * stderr(loglik)
(lm-eval bootstraps it, so that one number may differ slightly).
"""

from __future__ import annotations

import math
import re
from collections import Counter


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def mean_stderr(values: list[float]) -> float | None:
    """Standard error of the mean with the n - 1 sample deviation; None below two items."""
    n = len(values)
    if n < 2:
        return None
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) / math.sqrt(n)


def argmax(values: list[float]) -> int:
    """Index of the largest value; the first one on a tie (as numpy)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def choose(logprobs: list[float], choices: list[str]) -> tuple[int, int]:
    """(pred by summed log-prob, pred by log-prob per character of the choice)."""
    normed = [lp / len(c) for lp, c in zip(logprobs, choices, strict=True)]
    return argmax(logprobs), argmax(normed)


def perplexity(logliks: list[float]) -> float:
    return math.exp(-mean(logliks))


# ---------- generative answers ----------

THINK_BLOCK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
NUMBER = r"-?[$]?\d[\d,]*(?:\.\d+)?"
FINAL_NUMBER = re.compile(rf"(?:the answer is|answer:|####)\s*\**\s*({NUMBER})", re.IGNORECASE)
ANY_NUMBER = re.compile(NUMBER)


def strip_thinking(text: str) -> str:
    """The answer part of a generation: `<think>...</think>` blocks removed."""
    return THINK_BLOCK.sub("", text)


def normalise_number(text: str) -> str | None:
    """'$1,234.00' -> '1234'; None when it is not a number."""
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return str(int(value)) if value == int(value) else repr(value)


def extract_number(text: str) -> str | None:
    """The final numeric answer: after 'The answer is' / '####' when present, else the
    last number in the text (lm-eval's gsm8k 'flexible extract'); None if there is none."""
    text = strip_thinking(text)
    marked = FINAL_NUMBER.findall(text)
    found = marked[-1] if marked else (ANY_NUMBER.findall(text) or [None])[-1]
    return normalise_number(found) if found is not None else None


def gsm8k_gold(answer: str) -> str | None:
    """The reference number after '####' in a GSM8K answer."""
    return normalise_number(answer.split("####")[-1]) if "####" in answer else None


def extract_letter(text: str, n_choices: int) -> str | None:
    """The chosen option letter (A, B, ...) of a generative multiple-choice answer.

    Looks for 'answer is X' / 'Answer: X' first, then a letter standing alone at the start,
    then the first standalone valid letter anywhere; None when none is found.
    """
    letters = "".join(chr(ord("A") + i) for i in range(n_choices))
    text = strip_thinking(text).strip()
    patterns = (rf"answer(?: is)?\s*[:\-]?\s*\(?([{letters}])\b",
                rf"^\(?([{letters}])[).:\s]|^([{letters}])$",
                rf"\b([{letters}])\b")
    for pattern in patterns:
        match = re.search(pattern, text, flags=re.IGNORECASE if pattern == patterns[0] else 0)
        if match:
            return next(g for g in match.groups() if g).upper()
    return None


def majority_vote(answers: list[str | None]) -> str | None:
    """The most frequent parseable answer; a tie goes to the answer seen first; None when
    no answer parsed (counted wrong)."""
    parsed = [a for a in answers if a is not None]
    if not parsed:
        return None
    counts = Counter(parsed)
    best = max(counts.values())
    return next(a for a in parsed if counts[a] == best)
