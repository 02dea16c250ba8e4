"""Two synthetic skills learnt in seconds by tiny Llama models, for merge tests.

`make_two_skill_pair(folder)` writes three model folders that share one ancestor:
- base: trained briefly to copy short strings of letters or digits (`C abc=abc`,
  `C 307=307`), so it knows the format;
- father: the base fine-tuned on skill A, shifting each letter by one (`S abc=bcd`);
- mother: the base fine-tuned on skill B, mirroring each digit (`M 307=692`, 9 - d).
The skills touch different tokens, as two fine-tunes on different domains would,
so a sound merge can keep both.
`skill_scores(model_or_folder)` is greedy exact-match accuracy on held-out strings
(never seen in training) for both skills. A good merge of father and mother (with
the base) scores well on both; each parent alone fails the other parent's skill.

Everything is seeded and runs on one CPU thread in a few seconds.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import torch

from tiny_models import SPECIALS, VOCAB_CHARS, build_model, save_model

LETTERS = "abcdefghijkl"
DIGITS = "0123456789"
WORD = 3
BOS, EOS = SPECIALS.index("<bos>"), SPECIALS.index("<eos>")
TASKS = {"copy": "C", "skill_a": "S", "skill_b": "M"}  # skill_a: shift, skill_b: mirror


def answer(task: str, word: str) -> str:
    """The right answer of a task for a word."""
    if task == "copy":
        return word
    if task == "skill_a":
        return "".join(LETTERS[(LETTERS.index(c) + 1) % len(LETTERS)] for c in word)
    return "".join(str(9 - int(c)) for c in word)


def _split(task: str) -> tuple[list[str], list[str]]:
    """All 3-char words of the task's alphabet, shuffled once: 200 held out, rest to train."""
    alphabets = {"skill_a": LETTERS, "skill_b": DIGITS, "copy": LETTERS + DIGITS}
    words = ["".join(w) for w in itertools.product(alphabets[task], repeat=WORD)]
    if task == "copy":
        words = [w for w in words if w.isalpha() or w.isdigit()]
    random.Random(0).shuffle(words)
    return words[200:], words[:200]


def encode(text: str) -> list[int]:
    """Char ids exactly as the tiny models' char tokenizer assigns them."""
    return [len(SPECIALS) + VOCAB_CHARS.index(c) for c in text]


def _prompt(task: str, word: str) -> list[int]:
    return [BOS] + encode(f"{TASKS[task]} {word}=")


def _batch(task: str, words: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels; the loss is on the answer (and its end) only."""
    ids, labels = [], []
    for word in words:
        prompt = _prompt(task, word)
        full = prompt + encode(answer(task, word)) + [EOS]
        ids.append(full)
        labels.append([-100] * len(prompt) + full[len(prompt):])
    return torch.tensor(ids), torch.tensor(labels)


def train(model, task: str, steps: int, lr: float, seed: int, batch: int = 32,
          only: str | None = None):
    """A few AdamW steps on one task (in place on `model`, which the caller owns).

    `only`: train just the parameters whose name contains it (e.g. "layers.1.").
    """
    train_words, _ = _split(task)
    rng = random.Random(seed)
    params = [p for n, p in model.named_parameters() if only is None or only in n]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        ids, labels = _batch(task, rng.sample(train_words, batch))
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def task_accuracy(model, task: str) -> float:
    """Share of answer characters right, greedy, on the 200 held-out words.

    Per character rather than whole-answer exact match: a merge that keeps most of
    both skills gets credit for it (a parent without the skill scores about 0,
    since no task's answer character equals the one it would copy).
    """
    _, held_out = _split(task)
    ids = torch.tensor([_prompt(task, w) for w in held_out])
    for _ in range(WORD):
        logits = model(input_ids=ids).logits[:, -1, :]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    wanted = torch.tensor([encode(answer(task, w)) for w in held_out])
    return (ids[:, -WORD:] == wanted).float().mean().item()


def skill_scores(model_or_folder) -> dict[str, float]:
    """{"skill_a": accuracy, "skill_b": accuracy} for a model or a model folder."""
    model = model_or_folder
    if isinstance(model_or_folder, str | Path):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(model_or_folder)).eval()
    return {task: task_accuracy(model, task) for task in ("skill_a", "skill_b")}


def make_two_skill_pair(folder: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """(base, father, mother) folders: a copy-trained base and its two skill fine-tunes."""
    folder = Path(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # identical weights whatever the machine
    try:
        base = train(build_model("llama", seed=seed, n_layers=2), "copy", 200, 3e-3, seed)
        paths = [save_model(base, folder / "base")]
        # Each specialist is a partial fine-tune of one layer (the father's of the upper
        # layer, the mother's of the lower), as partial fine-tunes often are: a merge
        # with per-layer ratios can keep both skills; a uniform ratio dilutes both.
        for name, task, layer in (("father", "skill_a", "layers.1."),
                                  ("mother", "skill_b", "layers.0.")):
            child = build_model("llama", seed=seed, n_layers=2)
            child.load_state_dict(base.state_dict())
            trained = train(child, task, 150, 3e-3, seed + 1, only=layer)
            paths.append(save_model(trained, folder / name))
    finally:
        torch.set_num_threads(threads)
    return paths[0], paths[1], paths[2]
