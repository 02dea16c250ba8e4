"""Scoring the tiny two-skill trio (built by `darwin_recipes.demo.tiny.make_two_skill_pair`,
the tiny demo's parents; the `two_skill_pair` fixture in conftest.py).

`skill_scores(model_or_folder)` is greedy accuracy on held-out strings (never seen in
training) for both skills. A good merge of father and mother (with the base) scores well
on both; each parent alone fails the other parent's skill.
"""

from __future__ import annotations

from pathlib import Path

import torch

from darwin_recipes.demo.tiny import WORD, answer, encode, prompt_ids, split_words


@torch.no_grad()
def task_accuracy(model, task: str) -> float:
    """Share of answer characters right, greedy, on the 200 held-out words.

    Per character rather than whole-answer exact match: a merge that keeps most of
    both skills gets credit for it (a parent without the skill scores about 0,
    since no task's answer character equals the one it would copy).
    """
    _, held_out = split_words(task)
    ids = torch.tensor([prompt_ids(task, w) for w in held_out])
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
