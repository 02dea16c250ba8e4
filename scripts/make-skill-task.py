"""Write a shipped task file of a demo skill (run once per skill; the files are committed).

1000 distinct problems from the skill's own generator (darwin_recipes.demo.mother.SKILLS) and
a seed that no training recipe uses by default; a mother never trains on a context of the
file, so its score there measures the skill, not memory.

    .venv/bin/python scripts/make-skill-task.py two_digit_arithmetic   # seed 20261129
    .venv/bin/python scripts/make-skill-task.py letter_reversal        # seed 20261130
    .venv/bin/python scripts/make-skill-task.py digit_sorting          # seed 20261207
"""

import json
import random
import sys
from pathlib import Path

from darwin_recipes.demo.mother import skill_of

SEEDS = {"two_digit_arithmetic": 20261129, "letter_reversal": 20261130,
         "digit_sorting": 20261207}
COUNT = 1000
TASKS = Path(__file__).resolve().parents[1] / "src/darwin_merge/data/tasks"


def task_rows(name: str) -> list[dict]:
    """The file's rows: COUNT distinct problems from the skill's generator and seed."""
    skill = skill_of(name)
    rng, seen, rows = random.Random(SEEDS[name]), set(), []
    while len(rows) < COUNT:
        context, answer = skill.problem(rng, 2)
        if context not in seen:
            seen.add(context)
            rows.append({"context": context, "continuation": answer})
    return rows


def main(name: str) -> None:
    rows = task_rows(name)
    out = TASKS / skill_of(name).file
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} problems to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
