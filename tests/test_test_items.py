"""Fresh test items (demo/test_items.py): none is a context of the skill's task file or of a
fine-tune's training problems, and one seed gives the same items."""

from __future__ import annotations

import json

import pytest

from darwin_merge.cli import main
from darwin_merge.errors import UsageError
from darwin_recipes.benchmark.run import excluded_recipes
from darwin_recipes.demo.mother import evaluation_contexts, recipe_with, skill_of
from darwin_recipes.demo.test_items import fresh_items, training_contexts


def test_fresh_items_leave_out_the_task_file_and_the_training_problems():
    """Two-digit sums and differences: about 19,600 problems, of which the task file holds
    1,000 and the default fine-tune trained on thousands, so 2,000 items drawn without the
    exclusion would hit both."""
    recipe = recipe_with()  # the default arithmetic fine-tune: 400 steps of 32 problems
    trained = training_contexts(recipe)
    shipped = evaluation_contexts(skill=skill_of("two_digit_arithmetic"))
    assert len(trained) > 5_000 and len(shipped) >= 500
    items = fresh_items("two_digit_arithmetic", 11, 2_000, [recipe])
    contexts = [item["context"] for item in items]
    assert len(set(contexts)) == 2_000
    assert not set(contexts) & (trained | shipped)
    # the same seed, the same items; another seed, others
    assert fresh_items("two_digit_arithmetic", 11, 2_000, [recipe]) == items
    assert fresh_items("two_digit_arithmetic", 12, 2_000, [recipe]) != items
    # each answer is the problem's: "a - b =" -> " a-b"
    for item in items[:50]:
        left, op, right = item["context"].rstrip(" =").split(" ")
        value = int(left) + int(right) if op == "+" else int(left) - int(right)
        assert item["continuation"] == f" {value}"


def test_the_command_writes_a_task_file_of_items_nobody_trained_on(tmp_path, capsys):
    out = tmp_path / "rev.jsonl"
    assert main(["demo", "test-items", "letter_reversal", "--out", str(out), "--count", "50",
                 "--test-seed", "3"]) == 0
    items = [json.loads(line) for line in out.read_text().splitlines()]
    trained = set().union(*(training_contexts(r) for r in excluded_recipes()
                            if r.skill == "letter_reversal"))
    assert len(items) == 50 and not {i["context"] for i in items} & trained
    assert items == fresh_items("letter_reversal", 3, 50, excluded_recipes())
    assert "50 items of letter_reversal (test seed 3)" in capsys.readouterr().out


def test_asking_for_more_problems_than_the_skill_has_is_a_clear_error():
    with pytest.raises(UsageError, match="fresh problems found"):
        fresh_items("two_digit_arithmetic", 1, 30_000)
