"""Fresh test items for the synthetic skills: problems nobody has looked at, generated when a
benchmark runs (issue 34's test set).

`fresh_items(skill, test_seed, count, recipes)` draws `count` problems of a skill (its own
generator, demo/mother.py) from `test_seed`, leaving out every context of the skill's shipped
task file (whose search split tunes the search and whose holdout reports it) and every
training problem of the given fine-tune recipes. The same seed gives the same items on every
machine (Python's `random` seeded by a string); develop with any seed but the default one,
which is kept for the published tables.

    darwin demo test-items two_digit_arithmetic --test-seed 7 --count 500 --out arith.jsonl
    darwin eval MODEL --tasks arith.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from darwin_merge.errors import UsageError
from darwin_merge.io.files import write_text_atomic

from .mother import MotherRecipe, evaluation_contexts, skill_of, training_problems

# The published tables' test seed; develop with any other.
PUBLISHED_TEST_SEED = 2026


def training_contexts(recipe: MotherRecipe) -> set[str]:
    """Every context a fine-tune of `recipe` trained on (as `train` draws them)."""
    skill = skill_of(recipe.skill)
    problems = training_problems(recipe.seed, recipe.steps * recipe.batch_size,
                                 evaluation_contexts(skill=skill), recipe.max_operands, skill)
    return {context for context, _ in problems}


def fresh_items(skill_name: str, test_seed: int, count: int,
                recipes: list[MotherRecipe] = (), max_operands: int = 2) -> list[dict]:
    """`count` distinct problems of the skill as task-file items ({"context",
    "continuation"}), none of whose context is in the skill's task file or in the training
    problems of `recipes` (those of this skill)."""
    if count < 1:
        raise UsageError(f"--count must be at least 1 (got {count})")
    skill = skill_of(skill_name)
    excluded = evaluation_contexts(skill=skill)
    for recipe in recipes:
        if recipe.skill == skill_name:
            excluded |= training_contexts(recipe)
    rng = random.Random(f"darwin-test-items:{skill_name}:{test_seed}")
    items, seen = [], set()
    tries = 0
    while len(items) < count:
        tries += 1
        if tries > 100 * count + 10_000:
            raise UsageError(f"{skill_name}: only {len(items)} fresh problems found "
                             f"(asked for {count}); the skill's problems are used up")
        context, answer = skill.problem(rng, max_operands)
        if context in excluded or context in seen:
            continue
        seen.add(context)
        items.append({"context": context, "continuation": answer})
    return items


def write_items(items: list[dict], path: str | Path) -> Path:
    """The items as a task file (one JSON object a line), written whole."""
    path = Path(path)
    write_text_atomic(path, "".join(json.dumps(item) + "\n" for item in items))
    return path
