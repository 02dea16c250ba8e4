"""`darwin demo run`: the whole product on a pair that runs on a laptop CPU.

The default pair, `specialists`: a real base shipped by a PyPI package (SmolLM2-135M-Instruct,
or Gemma 3 270M with `--family gemma3`) and two fine-tunes of it, each with a skill the other
lacks (demo/mother.py, cached). `--pair father-mother`: the real model and its own arithmetic
fine-tune. Then scan, evolve, merge, health check, holdout evaluation beside the parents (and
the base) and the two usual baselines, card and report.
`--family tiny`: the same pipeline in about two minutes on a tiny base and two fine-tunes
that each learnt one skill in seconds (demo/tiny.py), for a first look.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from darwin_merge.card.markdown import markdown_blocks
from darwin_merge.errors import UsageError
from darwin_merge.evolve.recipe import build_recipe
from darwin_merge.evolve.run import run_evolve
from darwin_merge.merge.engine import cpu_threads
from darwin_merge.realmodels import ensure_real_model
from darwin_merge.records import (
    Phase1Summary,
    SummaryRecord,
    file_names,
    read_record,
)
from darwin_merge.records.search import SOURCE_COUNTS
from darwin_merge.report_tables import baseline_blocks, holdout_blocks
from darwin_merge.resources import FAST_EVAL_DTYPE

from ..benchmark.problem import load_problem
from .mother import prepare_mother
from .tiny import prepare_tiny_pair, task_paths

console = Console(stderr=True)

# The specialists pair, the default (`make demo`): the merge people make most. Two
# fine-tunes of one base, each with a skill the other lacks, merged with their base; the
# base's general skills are guarded (docs/DEMO.md has the measurements). The tiny demo's trio
# is such a pair too. The father-mother pair (`make demo PAIR=father-mother`, real families
# only): a real model and its own arithmetic fine-tune, a child that can at best match the
# mother (docs/RESULTS.md).
SPECIALISTS, FATHER_MOTHER = "specialists", "father-mother"
DEFAULT_PAIR = SPECIALISTS
PAIRS = (SPECIALISTS, FATHER_MOTHER)
TINY = "tiny"
# Each demo pair is a problem file of the benchmark's schema (benchmark/problems/*.yaml):
# its parents' recipes, tasks, and under `demo` the budget `make demo` runs it with. The
# specialists pairs are the benchmark's disjoint problems: each specialist trains its own half
# of the blocks (embeddings frozen), arithmetic the lower half, reversal the upper half
# (SmolLM2: blocks 0-14 and 15-29, Gemma 3: 0-8 and 9-17; the genome's blocks 0-2 and 3-5).
# Trained on the same blocks, or the other way round, the two SmolLM2 skills did not survive
# together in any merge measured before the tuned baselines (docs/DEMO.md, RESULTS.md; the
# benchmark's overlap problem measures it).
DEMO_PROBLEMS = {(TINY, SPECIALISTS): "tiny-specialists",
                 ("smollm2", SPECIALISTS): "smollm2-specialists-disjoint",
                 ("gemma3", SPECIALISTS): "gemma3-specialists-disjoint",
                 ("smollm2", FATHER_MOTHER): "smollm2-father-mother-demo",
                 ("gemma3", FATHER_MOTHER): "gemma3-father-mother-demo"}
FAMILIES = tuple(dict.fromkeys(family for family, _ in DEMO_PROBLEMS))
SPECIALIST_RECIPES = {family: load_problem(name).recipes()
                      for (family, pair), name in DEMO_PROBLEMS.items()
                      if pair == SPECIALISTS and family != TINY}
# The father-mother pair's mother, per family (Gemma 3's is its arithmetic specialist: one
# cached fine-tune for both pairs).
FAMILY_MOTHERS = {family: load_problem(name).recipes()["mother"]
                  for (family, pair), name in DEMO_PROBLEMS.items() if pair == FATHER_MOTHER}
# A pair's tasks: the recipe's fitness, guard and extra-task fields.
PRESET_FIELDS = {"fitness", "guard", "extra_tasks"}
SPECIALISTS_PRESET = load_problem(DEMO_PROBLEMS["smollm2", SPECIALISTS]).model_dump(
    include=PRESET_FIELDS)
# The tiny demo: each parent's skill in the fitness, the skill both learnt from their
# common base (copying) reported beside them. Keys: task file stems (demo/tiny.py).
TINY_PRESET = load_problem(DEMO_PROBLEMS[TINY, SPECIALISTS]).model_dump(
    include={"fitness", "extra_tasks"})
# The tiny trio's child that keeps both skills (the father's layer 1 over the mother's
# layer 0) is flagged for interference at layer 1 by the health check, which compares a
# child with its parents only: with both one-layer changes its states lie off the arc
# between two parents that each made one of them. Such a child is kept (its problem's
# allow_warning; an unhealthy one never is) until the health check measures a merge with a
# base against the base (docs/HEALTH.md).
# Torch CPU threads for the tiny demo: its matrices are too small for a second thread to
# help, and on a loaded 2-core machine the threads' waits made the run 2.5x slower (80 s
# against 200 s with the trio cached, docs/DEMO.md).
TINY_THREADS = 1
# The budget fields `darwin demo run` takes as flags (RESULTS.md's command line shows them).
DEMO_FLAGS = {"trials": "--trials", "limit": "--limit", "holdout_limit": "--holdout-limit",
              "eval_dtype": "--eval-dtype", "device": "--device"}


def run_demo(family: str = "smollm2", cache: Path = Path(".cache"), out: Path | None = None,
             device: str = "cpu", fresh: bool = False, fine_tunes: dict | None = None,
             pair: str = DEFAULT_PAIR, **budget) -> SummaryRecord:
    """Run (or continue, or just re-print) the demo; returns the run's summary.

    `fine_tunes` ({"father"/"mother": MotherRecipe}) replaces the pair's fine-tune recipes,
    e.g. two-step recipes in the tests; `budget` overrides the pair's budget (budget_of)
    and any other Recipe field.
    """
    check_choice(family, pair)
    out = Path(out or default_out(family, pair))
    summary_path = out / file_names.SUMMARY
    if summary_path.is_file() and not fresh:
        finished = read_record(SummaryRecord, summary_path)  # malformed: one-line RecordError
        check_same_pair(finished, family, pair, out)
        console.print(f"[bold]demo[/bold] already complete in {out} (--fresh to redo it)")
        return finished
    fine_tunes = fine_tunes or {}
    parents = (tiny_parents(cache) if family == TINY
               else specialist_parents(family, cache, device, fine_tunes) if pair == SPECIALISTS
               else real_parents(family, cache, fine_tunes.get("mother"), device))
    console.print(f"[bold]demo[/bold] evolve: {parents['father'].name} x "
                  f"{parents['mother'].name} -> {out}")
    defaults = budget_of(family, pair)
    values = {**defaults, **{k: v for k, v in budget.items() if v is not None}}
    recipe = build_recipe(out=out, device=device, **parents, **values)
    with cpu_threads(TINY_THREADS if family == TINY else None):
        summary = run_evolve(recipe)
    changed = {k: v for k, v in values.items() if defaults.get(k) != v}
    if device != "cpu":
        changed["device"] = device
    for role in fine_tunes:  # a fine-tune's folder names its recipe's hash
        changed[role] = Path(parents[role]).name
    (out / file_names.RESULTS).write_text(results_markdown(summary, out, *demo_command(
        family, pair, changed)), encoding="utf-8")
    return summary


def demo_command(family: str, pair: str, changed: dict) -> tuple[str, str]:
    """(the `make demo` line that makes the run, the changes it cannot say): FAMILY and
    PAIR when not the default, DEMO_ARGS for a budget changed through `darwin demo run`'s
    flags (in their order), and the changes a Python caller made (other budget fields, a
    mother recipe)."""
    command = ("make demo" + ("" if family == "smollm2" else f" FAMILY={family}")
               + ("" if pair == DEFAULT_PAIR else f" PAIR={pair}"))
    flags = " ".join(f"{flag} {changed[k]}" for k, flag in DEMO_FLAGS.items() if k in changed)
    if flags:
        command += f' DEMO_ARGS="{flags}"'
    return command, ", ".join(f"{k}={v}" for k, v in changed.items() if k not in DEMO_FLAGS)


def check_choice(family: str, pair: str) -> None:
    """A clear error for an unknown family or pair, or a pair the family does not have."""
    if family not in FAMILIES:
        raise UsageError(f"unknown demo family {family!r} (known: {', '.join(FAMILIES)})")
    if pair not in PAIRS:
        raise UsageError(f"unknown demo pair {pair!r} (known: {', '.join(PAIRS)})")
    if pair == FATHER_MOTHER and family not in FAMILY_MOTHERS:
        raise UsageError("the father-mother pair exists for the "
                         f"{' and '.join(FAMILY_MOTHERS)} families only")


def check_same_pair(finished: SummaryRecord, family: str, pair: str, out: Path) -> None:
    """Refuse to re-print a finished run of other fitness tasks as this pair's: `make demo`'s
    pair changed on 2026-12-01, and its run folder kept its name (the tiny family's tasks
    are files of its cache, not checked)."""
    if family == TINY:
        return
    expected = preset_of(family, pair)["fitness"]
    tasks = list(finished.fitness) if finished.fitness else []
    if set(tasks) != set(expected):
        raise UsageError(f"{out} holds a finished run on other fitness tasks "
                         f"({', '.join(tasks)}), not the {pair} pair's: remove it or give "
                         "another --out")


def preset_of(family: str, pair: str) -> dict:
    """A real pair's tasks: the recipe's fitness, guard and extra-task fields, from its
    problem file."""
    return load_problem(DEMO_PROBLEMS[family, pair]).model_dump(include=PRESET_FIELDS)


def budget_of(family: str, pair: str) -> dict:
    """The pair's budget: its problem file's `budget` and `demo` fields; the real models'
    forward passes in bfloat16 where the CPU multiplies it natively (about twice as fast as
    float32 with AMX), float32 elsewhere, where torch emulates bfloat16 several times slower
    (docs/EVOLVE.md compares the two dtypes' scores; the parents and every merge stay
    float32)."""
    problem = load_problem(DEMO_PROBLEMS[family, pair])
    budget = {**problem.budget, **problem.demo}
    return budget if family == TINY else {**budget, "eval_dtype": FAST_EVAL_DTYPE}


def demo_recipes() -> list:
    """Every fine-tune recipe of the real demos (both families, both pairs): the training
    problems fresh test items leave out (demo/test_items.py)."""
    recipes = [r for family in SPECIALIST_RECIPES.values() for r in family.values()]
    return recipes + list(FAMILY_MOTHERS.values())


def default_out(family: str, pair: str = DEFAULT_PAIR) -> Path:
    """runs/demo-FAMILY, or runs/demo-FAMILY-PAIR for a pair other than the default."""
    return Path(f"runs/demo-{family}" + ("" if pair == DEFAULT_PAIR else f"-{pair}"))


def specialist_parents(family: str, cache: Path, device: str, fine_tunes: dict | None = None
                       ) -> dict:
    """The real base (imported) and its two one-skill fine-tunes (trained once, cached),
    with the specialists' tasks: the recipe's parent, base and task fields. `fine_tunes`
    replaces the family's recipes (SPECIALIST_RECIPES) by role."""
    recipes = {**SPECIALIST_RECIPES[family], **(fine_tunes or {})}
    console.print(f"[bold]demo[/bold] 1/3 base: importing the real {family} model")
    base = ensure_real_model(family, cache)
    console.print("[bold]demo[/bold] 2/3 father: the base fine-tuned on arithmetic "
                  "(cached after the first run)")
    father = prepare_mother(base, cache, recipes["father"], device=device)
    console.print("[bold]demo[/bold] 3/3 mother: the base fine-tuned on letter reversal "
                  "(cached after the first run)")
    mother = prepare_mother(base, cache, recipes["mother"], device=device)
    return {"father": father, "mother": mother, "base": base,
            **preset_of(family, SPECIALISTS)}


def real_parents(family: str, cache: Path, mother_recipe, device: str) -> dict:
    """The real father (imported) and its arithmetic mother (trained once, cached), with
    the family's tasks: the recipe's parent and task fields."""
    console.print(f"[bold]demo[/bold] 1/2 father: importing the real {family} model")
    father = ensure_real_model(family, cache)
    console.print("[bold]demo[/bold] 2/2 mother: the father fine-tuned on arithmetic "
                  "(cached after the first run)")
    mother = prepare_mother(father, cache, mother_recipe or FAMILY_MOTHERS[family], device=device)
    return {"father": father, "mother": mother, **preset_of(family, FATHER_MOTHER)}


def tiny_parents(cache: Path) -> dict:
    """The tiny trio (trained once, cached) and its task files: the recipe's parent and
    task fields (tasks named by their file's path, as any task file)."""
    console.print("[bold]demo[/bold] parents: a tiny base and its two one-skill fine-tunes "
                  "(trained in seconds, cached after the first run)")
    folder = prepare_tiny_pair(cache)
    tasks = {stem: str(path) for stem, path in task_paths(folder).items()}
    return {"father": folder / "father", "mother": folder / "mother", "base": folder / "base",
            "fitness": {tasks[stem]: w for stem, w in TINY_PRESET["fitness"].items()},
            "extra_tasks": [tasks[stem] for stem in TINY_PRESET["extra_tasks"]]}


def _rounded(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def search_story(summary: SummaryRecord) -> list[str]:
    """Where the child came from: Phase 2's candidates by source, CMA-ES's generations,
    the best seed and what CMA-ES added over it (empty for a summary without them)."""
    phase2, best, seed = summary.phase2, summary.best, summary.phase2.best_seed
    if phase2.sources is None:
        return []
    counts = ", ".join(f"{n} {SOURCE_COUNTS.get(s, s)}" for s, n in phase2.sources.items())
    gain = "" if phase2.cma_es_gain is None else (
        f"; CMA-ES's best added {phase2.cma_es_gain:+.4f} over it")
    seed_text = ("no seed's child passed the health check" if seed is None else
                 f"the best seed was {seed.proposer()} (trial {seed.trial}, "
                 f"{seed.search_fitness:.4f}){gain}")
    return [f"Phase 2's candidates: {counts}; CMA-ES ran {phase2.cma_es_generations} "
            f"generations; racing stopped {phase2.stopped_by_racing} early.",
            f"The child was found by {best.proposer()} (trial {best.trial}, search fitness "
            f"{best.search_fitness:.4f}); {seed_text}."]


def spearman_words(phase1: Phase1Summary) -> str:
    """The proxy's Spearman over the fully scored candidates (with n) and over all of them
    (racing's estimates included)."""
    full = ("" if phase1.pairs_full is None else
            f"{_rounded(phase1.spearman_full)} over the {phase1.pairs_full} fully scored "
            "candidates, ")
    return (f"proxy-vs-real Spearman {full}{_rounded(phase1.spearman)} over all "
            f"{phase1.pairs} (racing's estimates for the stopped ones).")


def gate_markdown(summary: SummaryRecord) -> list[str]:
    """The health gate's effect: candidates better on the search split than the child that
    the health check rejected, with their findings."""
    if not summary.rejected_by_health:
        return ["", "Health gate: no candidate that scored above the child on the search "
                "split was rejected by the health check."]
    lines = ["", "Health gate: these candidates scored above the child on the search split "
             "and were rejected by the health check:", ""]
    for r in summary.rejected_by_health:
        losses = "; ".join(
            f"{probe} " + ", ".join(f"{role} {value:.3f}" for role, value in by_role.items()
                                    if value is not None)
            for probe, by_role in (r.probe_losses or {}).items())
        lines.append(f"- trial {r.trial}: search fitness {r.search_fitness:.4f}, {r.verdict}"
                     + (f" ({'; '.join(r.reasons)})" if r.reasons else "")
                     + (f"; probe losses (nats per token): {losses}" if losses else ""))
    return lines


def results_markdown(summary: SummaryRecord, run_dir: Path, command: str = "make demo",
                     python_changes: str = "") -> str:
    """docs/RESULTS.md's body from a finished run: the holdout table with standard errors,
    item counts, the command (and what a Python caller changed beyond it), date and
    hardware (all read from the run's records)."""
    import os
    import platform

    phase1, phase2, best = summary.phase1, summary.phase2, summary.best
    baselines = baseline_blocks(summary)
    tables = markdown_blocks(holdout_blocks(summary)) + (
        "\n### Baselines\n\n" + markdown_blocks(baselines) if baselines else "")
    forward = ("" if summary.eval_dtype in (None, summary.dtype)
               else f" (forward passes in {summary.eval_dtype})")
    return "\n".join([
        f"Command: `{command}`"
        + (f" with changes from Python ({python_changes})" if python_changes else "")
        + f" (run folder `{run_dir}`), {summary.created}.",
        f"Hardware: {os.cpu_count()} CPU cores ({platform.machine()}), device "
        f"{summary.device}, {summary.dtype}{forward}.",
        f"Fitness: {summary.fitness} on the `search` split "
        f"({summary.limit or 'all'} items per task); the tables are on the `holdout` "
        "split (each task's primary metric, zero-shot; n items per task in the header).",
        f"Search: Phase 1 {phase1.steps} CMA-ES generations in {phase1.seconds:.1f} s; "
        f"Phase 2 {phase2.trials} candidates in {phase2.seconds:.0f} s; {spearman_words(phase1)}",
        *search_story(summary),
        f"Best genome: trial {best.trial}, genome_hash `{best.genome_hash}`; health: "
        f"{summary.health.verdict}.",
        "",
        tables.rstrip(),
        *gate_markdown(summary),
        "",
    ])
