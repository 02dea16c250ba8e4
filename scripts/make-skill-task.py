"""Write the shipped `two_digit_arithmetic` task file (run once; the file is committed).

1000 distinct problems "a + b =" / "a - b =" with a, b in 1..99, from the demo mother's own
generator (darwin_merge.demo.mother, skill `two_digit_arithmetic`) and a seed that no
training recipe uses by default. The mother never trains on a context of this file.

    .venv/bin/python scripts/make-two-digit-arithmetic.py
"""

import json
import random
from pathlib import Path

from darwin_merge.demo.mother import SKILLS, arithmetic_problem

SEED, COUNT = 20261129, 1000
OUT = Path(__file__).resolve().parents[1] / "src/darwin_merge/data/tasks/two_digit_arithmetic.jsonl"


def main() -> None:
    rng, seen, rows = random.Random(SEED), set(), []
    while len(rows) < COUNT:
        context, answer = arithmetic_problem(rng, 2, SKILLS["two_digit_arithmetic"])
        if context not in seen:
            seen.add(context)
            rows.append({"context": context, "continuation": answer})
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} problems to {OUT}")


if __name__ == "__main__":
    main()
