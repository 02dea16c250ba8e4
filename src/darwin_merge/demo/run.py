"""`darwin demo run`: the whole product on a real pair that runs on a laptop CPU.

Father: a real model shipped by a PyPI package (SmolLM2-135M-Instruct, or Gemma 3 270M
with `--family gemma3`). Mother: the father fine-tuned into an arithmetic specialist
(demo/mother.py, cached). Then scan, evolve, merge, health check, holdout evaluation
beside both parents and the two usual baselines, card and report.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from ..errors import UsageError
from ..evolve.recipe import build_recipe
from ..evolve.run import run_evolve
from ..realmodels import ensure_real_model
from .mother import prepare_mother

console = Console(stderr=True)

# Fitness: the mother's new skill and the father's general knowledge; reported beside
# them on holdout: two general-knowledge tasks outside the fitness (must not be lost).
PRESETS = {
    "smollm2": {"fitness": {"simple_arithmetic": 0.5, "arc_easy": 0.5},
                "extra_tasks": ["arc_challenge", "piqa"]},
    "gemma3": {"fitness": {"simple_arithmetic": 0.5, "arc_easy": 0.5},
               "extra_tasks": ["arc_challenge", "piqa"]},
}
# The budget that keeps the whole demo under 30 minutes on 2 CPU cores once the mother
# is cached (docs/DEMO.md has the measured times).
DEFAULT_BUDGET = {"trials": 30, "limit": 50, "holdout_limit": 250, "phase1_steps": 200,
                  "top_k": 6}


def run_demo(family: str = "smollm2", cache: Path = Path(".cache"), out: Path | None = None,
             device: str = "cpu", fresh: bool = False, **budget) -> dict:
    """Run (or continue, or just re-print) the demo; returns the run's summary."""
    if family not in PRESETS:
        raise UsageError(f"unknown demo family {family!r} (known: {', '.join(PRESETS)})")
    out = Path(out or f"runs/demo-{family}")
    summary_path = out / "summary.json"
    if summary_path.is_file() and not fresh:
        console.print(f"[bold]demo[/bold] already complete in {out} (--fresh to redo it)")
        return json.loads(summary_path.read_text())
    console.print(f"[bold]demo[/bold] 1/3 father: importing the real {family} model")
    father = ensure_real_model(family, cache)
    console.print("[bold]demo[/bold] 2/3 mother: the father fine-tuned on arithmetic "
                  "(cached after the first run)")
    mother = prepare_mother(father, cache, device=device)
    console.print(f"[bold]demo[/bold] 3/3 evolve: {father.name} x {mother.name} -> {out}")
    values = {**DEFAULT_BUDGET, **{k: v for k, v in budget.items() if v is not None}}
    recipe = build_recipe(father=father, mother=mother, out=out, device=device,
                          **PRESETS[family], **values)
    return run_evolve(recipe)
