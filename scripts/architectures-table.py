"""Write the table of docs/ARCHITECTURES.md: every causal-LM type transformers knows.

For each type of transformers' MODEL_FOR_CAUSAL_LM_MAPPING_NAMES it runs what
tests/test_registry.py runs (tiny random father, perturbed mother, `darwin inspect`,
`darwin merge`, the child reloaded in transformers) and writes one row: the tensor count
per component and the status (passed, skipped with transformers' reason, or FAILED).
The rows replace everything between the two marker lines of the page:

    .venv/bin/python scripts/architectures-table.py [docs/ARCHITECTURES.md]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from registry_models import TypeCheck, causal_lm_types, check_type  # noqa: E402

BEGIN = "<!-- registry table: begin (scripts/architectures-table.py writes it) -->"
END = "<!-- registry table: end -->"


def status_of(result: TypeCheck) -> str:
    if result.skipped:
        return "skipped: " + result.skipped.replace("|", "/")
    if result.passed:
        return "passed"
    problems = [f"{len(result.unclassified)} unclassified" if result.unclassified else "",
                f"{len(result.missing_in_child)} missing in child" if result.missing_in_child
                else "", "" if result.child_finite else "non-finite logits",
                "" if result.child_differs else "child equals father"]
    return "FAILED: " + ", ".join(p for p in problems if p)


def row_of(model_type: str) -> str:
    folder = Path(tempfile.mkdtemp(prefix=f"arch-{model_type}-"))
    try:
        result = check_type(model_type, folder)
        components = ", ".join(f"{c} {n}" for c, n in result.components) or "-"
        status = status_of(result)
    except Exception as exc:  # a Darwin failure on this type: recorded, not hidden
        components, status = "-", f"FAILED: {type(exc).__name__}: {str(exc)[:120]}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return f"| `{model_type}` | {components} | {status} |"


def main(page: Path) -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    start = time.time()
    rows = []
    for model_type in causal_lm_types():
        rows.append(row_of(model_type))
        print(rows[-1], flush=True)
    passed = sum("| passed |" in r for r in rows)
    skipped = sum("| skipped:" in r for r in rows)
    lines = [BEGIN, "",
             f"transformers {transformers.__version__}: {len(rows)} causal-LM types, "
             f"{passed} passed, {skipped} skipped, {len(rows) - passed - skipped} failed "
             f"({time.time() - start:.0f} s on one thread).", "",
             "| type | tensors per component (tiny father) | status |", "|---|---|---|",
             *rows, "", END]
    text = page.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    page.write_text(head + "\n".join(lines) + tail, encoding="utf-8")
    print(f"{page}: {passed} passed, {skipped} skipped, "
          f"{len(rows) - passed - skipped} failed")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "ARCHITECTURES.md")
