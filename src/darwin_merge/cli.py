"""The `darwin` command line: a thin layer over the library.

User mistakes (`DarwinError`) become one line on stderr and a documented exit code;
`--debug` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .errors import DarwinError, UsageError
from .evolve.recipe import Recipe
from .genome import TRANSPLANT_HIGH, TRANSPLANT_LOW
from .io.dtypes import DTYPE_NAMES
from .typer_fixes import PlainHelpGroup, hide_flag_types

hide_flag_types()  # no `<bool>` beside a flag in the help (typer 0.29)
app = typer.Typer(
    cls=PlainHelpGroup,  # help texts are plain text: `[lm-eval]` shows, not read as markup
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Darwin: diagnostic-guided evolutionary merging of language models.",
)
console = Console(stderr=True)
out = Console()

# Options several commands share: declared once here, with one help text.
FATHER = typer.Option(help="father (A): a model folder or a Hub id org/name[@revision]")
MOTHER = typer.Option(help="mother (B): a model folder or a Hub id org/name[@revision]")
BASE = typer.Option(help="common base (W), optional: a model folder or a Hub id")
DEVICE = typer.Option(help="cpu, cuda, cuda:N or auto")
DTYPE = typer.Option(help=f"{', '.join(DTYPE_NAMES[:-1])} or {DTYPE_NAMES[-1]}")
# Models are text: a folder, or a Hub id resolved through huggingface_hub (io/model_ref.py).
Father = Annotated[str, FATHER]
Mother = Annotated[str, MOTHER]
FatherOrNone = Annotated[str | None, FATHER]
MotherOrNone = Annotated[str | None, MOTHER]
Base = Annotated[str | None, BASE]
Device = Annotated[str, DEVICE]
Dtype = Annotated[str, DTYPE]
EvalDtype = Annotated[str | None, typer.Option(
    help="dtype of the forward passes (probes, scoring, health); bfloat16 is about 2x "
    "faster on CPUs with AMX or AVX512-BF16; the parents and the merge keep --dtype",
    show_default="--dtype")]
Overwrite = Annotated[bool, typer.Option(help="replace the output folder if it exists")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]
BatchSize = Annotated[int, typer.Option(help="prompts or requests per forward pass")]
Cache = Annotated[Path, typer.Option(help="cache folder (imported models, the mother)")]
GenomeFile = Annotated[Path | None, typer.Option(
    "--genome", help="genome YAML (14 values; the defaults if absent)")]
ScanFile = Annotated[Path | None, typer.Option(
    "--scan", help="scan.json of `darwin scan` (per-tensor mri_ratio)")]
Probes = Annotated[Path | None, typer.Option(help="probe folder (*.jsonl) replacing the five")]
Limit = Annotated[int | None, typer.Option(help="items per fitness task (search split)",
                                           show_default="all")]
HoldoutLimit = Annotated[int | None, typer.Option(help="items per task on the holdout split",
                                                  show_default="all")]
MaxTokens = Annotated[int, typer.Option(help="tokens kept per probe prompt")]
MaxPrompts = Annotated[int | None, typer.Option(
    help="prompts used per probe set", show_default="all")]
TransplantLow = Annotated[float, typer.Option(help="below: the father's tensor, bit for bit")]
TransplantHigh = Annotated[float, typer.Option(help="above: the mother's tensor, bit for bit")]
DisjointMean = Annotated[bool, typer.Option(
    help="TIES disjoint mean instead of weighted sum")]
ComputeDtype = Annotated[str, typer.Option(help="float32 or float64 arithmetic")]
MriFormula = Annotated[str, typer.Option(
    help="the scan's ratio formula: attribution (separates the parents) or card (the model "
         "card's, faithful); docs/SCAN.md")]
ScanItems = Annotated[int, typer.Option(help="search items per fitness task the scan probes")]
# evolve's defaults, shown in its --help, are the Recipe's own
DEFAULTS = {name: field.default for name, field in Recipe.model_fields.items()
            if not field.is_required()}


def _print_version(value: bool) -> None:
    if value:
        out.print(__version__)
        raise typer.Exit()


@app.callback()
def options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print the version and exit"),
    debug: bool = typer.Option(False, "--debug", help="show the traceback of an error "
                               "instead of its one-line message (anywhere on the line)"),
) -> None:
    """Darwin: diagnostic-guided evolutionary merging of language models."""


@app.command("version")
def version_cmd() -> None:
    """Print the package version."""
    out.print(__version__)


@app.command("import-gguf")
def import_gguf_cmd(
    gguf_file: Path = typer.Argument(..., help="GGUF file to import"),
    out_dir: Path = typer.Argument(..., help="Hugging Face folder to create"),
    dtype: Dtype = "float32",
    overwrite: Overwrite = False,
) -> None:
    """Turn a GGUF file into a Hugging Face folder (safetensors + tokenizer + template)."""
    from .io.gguf_import import import_gguf

    with console.status(f"importing {gguf_file.name} (de-quantising to {dtype})"):
        path = import_gguf(gguf_file, out_dir, dtype=dtype, overwrite=overwrite)
    out.print(f"imported {gguf_file} -> {path}")


@app.command("real-model")
def real_model_cmd(
    name: str = typer.Argument(..., help="smollm2 or gemma3"),
    cache: Cache = Path(".cache"),
    dtype: Dtype = "float32",
) -> None:
    """Import a real model shipped by a PyPI package (once) and print its folder."""
    from .realmodels import ensure_real_model

    with console.status(f"preparing real model {name}"):
        path = ensure_real_model(name, cache, dtype)
    out.print(str(path))


@app.command("inspect")
def inspect_cmd(
    model: str = typer.Argument(..., help="model folder or Hub id (org/name[@revision])"),
    others: list[str] | None = typer.Argument(
        None, help="models to compare with the first (N parents: each against it)"),
    as_json: AsJson = False,
    all_tensors: bool = typer.Option(False, "--all", help="list every tensor in the table"),
) -> None:
    """Architecture, size, and every tensor's component, layer and block; with more models,
    what differs between each of them and the first (can they be merged)."""
    from .inspection import compare_models, comparison_summary, inspect_model, inspection_summary
    from .io import ModelSource

    model, others = _ref(model), [_ref(o) for o in others or []]
    first = inspect_model(model)
    compared = []
    for other in others:
        with ModelSource(model) as a, ModelSource(other) as b:
            compared.append({"model": inspect_model(other), "comparison": compare_models(a, b)})
    if as_json:  # two models: the layout of `darwin inspect A B` before N parents
        report = first if not compared else (
            {"model": first, "model2": compared[0]["model"],
             "comparison": compared[0]["comparison"]} if len(compared) == 1 else
            {"model": first, "compared": compared})
        out.print_json(json.dumps(report))
        return
    _print_all(inspection_summary(first, all_tensors))
    for index, other in enumerate(compared, start=2):
        if len(compared) > 1:
            out.print(f"[bold]model {index}[/bold] ({others[index - 2]}) against the first:")
        _print_all(comparison_summary(other["comparison"]))


@app.command("evolve")
def evolve_cmd(
    ctx: typer.Context,
    father: FatherOrNone = None,
    mother: MotherOrNone = None,
    base: Base = None,
    fitness: str | None = typer.Option(
        None, help="task=weight,... e.g. arc_easy=0.5,simple_arithmetic=0.5"),
    run_dir: Path | None = typer.Option(None, "--out",
                                        help="RUN_DIR (re-run the command to continue)"),
    recipe: Path | None = typer.Option(
        None, help="YAML recipe with the same fields (options typed here win)"),
    scan: ScanFile = None,
    mri: MriFormula = DEFAULTS["mri"],
    scan_items: ScanItems = DEFAULTS["scan_items"],
    scan_probe_sets: bool = typer.Option(
        DEFAULTS["scan_probe_sets"], help="the scan also attributes the probe sets' text "
        "(its picture only; --no-scan-probe-sets takes about a third of its time)"),
    probes: Probes = None,
    trials: int = typer.Option(DEFAULTS["trials"], help="Phase 2 candidates"),
    timeout: float | None = typer.Option(None, help="Phase 2 budget in seconds",
                                         show_default="none"),
    phase1_steps: int = typer.Option(DEFAULTS["phase1_steps"],
                                     help="Phase 1 CMA-ES generations"),
    top_k: int = typer.Option(DEFAULTS["top_k"], help="Phase 1 genomes that seed Phase 2"),
    limit: Limit = None,
    holdout_limit: HoldoutLimit = None,
    fitness_holdout_limit: int | None = typer.Option(
        None, help="holdout items per fitness task (more than the split holds: all of it)",
        show_default="--holdout-limit"),
    extra_tasks: str | None = typer.Option(
        None, help="tasks outside the fitness reported on holdout, e.g. arc_challenge,piqa"),
    guard: str | None = typer.Option(
        None, help="task=tolerance,...: penalise children more than the tolerance below the "
        "base (without one: the better parent) on the task, e.g. lambada_openai=0.05"),
    guard_rule: str = typer.Option(
        DEFAULTS["guard_rule"], help="how a guard is judged on the search items: floor (the "
        "child's score under the floor) or paired (its per-item difference from the "
        "reference more than one standard error under -tolerance; docs/EVOLVE.md)"),
    storage: str | None = typer.Option(None, help="postgresql://... to share one search"),
    study: str | None = typer.Option(None, help="study name inside --storage"),
    device: Device = DEFAULTS["device"],
    dtype: Dtype = DEFAULTS["dtype"],
    eval_dtype: EvalDtype = None,
    seed: int = typer.Option(DEFAULTS["seed"], help="search seed"),
    batch_size: BatchSize = DEFAULTS["batch_size"],
    popsize: int = typer.Option(DEFAULTS["popsize"], help="Phase 2 CMA-ES population"),
    sigma0: float | None = typer.Option(
        None, help="CMA-ES's first step in [0, 1] gene coordinates", show_default="0.15 "
        "under v2, the best seeds' spread under v3"),
    cma: str = typer.Option(DEFAULTS["cma"], help="Phase 2's CMA-ES: full or separable "
                            "(diagonal covariance)"),
    prefer: str = typer.Option(DEFAULTS["prefer"], help="the child: fitness (the fittest "
                               "healthy candidate) or health (of the Pareto front within one "
                               "SE of it, the lowest probe loss; docs/EVOLVE.md)"),
    search_only: bool = typer.Option(False, help="stop after the search (extra workers)"),
    allow_warning: bool = typer.Option(False, help="keep a child whose health check flags "
                                       "layers (interference) but finds no other fault"),
    genome_rule: str = typer.Option(
        DEFAULTS["genome_rule"], help="the genome searched: v2 (the mother's share per "
        "component and block) or v3 (also a task-vector scale per parent, TIES's trim, "
        "sign election, the disjoint mean; the tuned baselines seed it; docs/MERGE.md)"),
    baselines: str = typer.Option(
        DEFAULTS["baselines"], help="merges the child is compared with: none; fixed "
        "(DARE-TIES 0.5, linear 0.5, task arithmetic 1.0); tuned (those, and task "
        "arithmetic, TIES and DARE-TIES tuned on the search split; docs/EVOLVE.md)"),
) -> None:
    """Search the genome (Phase 1 proxy, Phase 2 real merges), then merge, check, score.

    Without --scan the scan runs first (into RUN_DIR/scan). With --recipe, the recipe's
    values replace the defaults shown here and options typed on the line replace both.
    """
    from .evolve.recipe import build_recipe, load_recipe, parse_fitness
    from .evolve.run import run_evolve
    from .evolve.summary_tables import summary_tables

    values = dict(father=father, mother=mother, base=base, out=run_dir, scan=scan, mri=mri,
                  scan_items=scan_items, scan_probe_sets=scan_probe_sets, probes=probes,
                  trials=trials,
                  timeout=timeout, phase1_steps=phase1_steps, top_k=top_k, limit=limit,
                  holdout_limit=holdout_limit, fitness_holdout_limit=fitness_holdout_limit,
                  storage=storage, study=study, device=device,
                  dtype=dtype, eval_dtype=eval_dtype, seed=seed, batch_size=batch_size,
                  popsize=popsize, sigma0=sigma0, cma=cma, prefer=prefer,
                  allow_warning=allow_warning or None, baselines=baselines,
                  genome_rule=genome_rule,
                  fitness=parse_fitness(fitness) if fitness else None,
                  guard=parse_fitness(guard, option="--guard") if guard else None,
                  guard_rule=guard_rule,
                  extra_tasks=[t for t in extra_tasks.split(",") if t] if extra_tasks else None)
    values = _typed_only(ctx, values, out="run_dir")
    if recipe is not None:
        built = load_recipe(recipe, **values)
    else:
        missing = [k for k in ("father", "mother", "fitness", "out") if values[k] is None]
        if missing:
            raise UsageError("missing " + ", ".join(f"--{m}" for m in missing) +
                             " (or give --recipe FILE)")
        built = build_recipe(**values)
    summary = run_evolve(built, finish_run=not search_only)
    if search_only:
        out.print(f"search recorded in {built.storage or built.out / 'study.db'}")
        return
    _print_all(summary_tables(summary, built.out))


def _typed_only(ctx: typer.Context, values: dict, **param_names: str) -> dict:
    """`values` with those left at their shown default as None (a recipe's value wins)."""
    def typed(key: str) -> bool:
        name = param_names.get(key, key)
        source = ctx.get_parameter_source(name)  # an enum of click's (typer may vendor it)
        return source is None or source.name != "DEFAULT"

    return {key: value if typed(key) else None for key, value in values.items()}


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help="model folder or Hub id (org/name[@revision])"),
    tasks: str = typer.Option("", help="comma-separated task names (see docs/EVAL.md)"),
    limit: int | None = typer.Option(None, help="first N items of the split"),
    split: str = typer.Option("all", help="search, holdout or all"),
    batch_size: BatchSize = 16,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    out_file: Path | None = typer.Option(None, "--out", help="write results JSON here"),
    task_file: Path | None = typer.Option(None, help="a user multiple-choice JSONL task"),
    samples: int = typer.Option(1, help="generations per item for generative tasks (maj@K)"),
    thinking: bool = typer.Option(False, help="enable_thinking in the chat template"),
    max_new_tokens: int | None = typer.Option(None, help="generation length (default: task's)"),
    log_samples: bool = typer.Option(
        False, help="also write each item's record beside --out (samples_<task>_<date>.jsonl)"),
    backend: str = typer.Option("darwin", help="darwin (its tasks) or lm-eval (any lm-eval "
                                "task; the [lm-eval] extra)"),
    lm_eval_include: Path | None = typer.Option(
        None, help="--backend lm-eval: a folder of your own lm-eval task YAMLs"),
) -> None:
    """Score a model on benchmark tasks (lm-eval-compatible) and print a table."""
    from .eval import evaluate_path, write_results
    from .eval.lm_eval_backend import evaluate_path_lm_eval
    from .eval.report import results_table

    if log_samples and out_file is None:
        raise UsageError("--log-samples writes its files beside the results: give --out too")
    model = _ref(model)
    if backend == "lm-eval":
        _refuse_darwin_only(split=split != "all", task_file=task_file is not None,
                            samples=samples != 1, thinking=thinking,
                            max_new_tokens=max_new_tokens is not None)
        record = evaluate_path_lm_eval(model, tasks, limit=limit, batch_size=batch_size,
                                       device=device, dtype=dtype, include_path=lm_eval_include,
                                       log_samples=log_samples)
    elif backend == "darwin":
        if lm_eval_include is not None:
            raise UsageError("--lm-eval-include applies to --backend lm-eval only")
        record = evaluate_path(model, tasks, split=split, limit=limit, batch_size=batch_size,
                               device=device, dtype=dtype, task_file=task_file, samples=samples,
                               thinking=thinking, max_new_tokens=max_new_tokens,
                               log_samples=log_samples)
    else:
        raise UsageError(f"unknown --backend {backend!r} (use darwin or lm-eval)")
    out.print(results_table(record))
    if out_file is not None:
        out.print(f"results written to {write_results(record, out_file)}")
    if log_samples:
        out.print(f"per-item records of {len(record['samples'])} task(s) written beside it "
                  "(samples_<task>_<date>.jsonl)")


def _ref(model: str | None, allow_pickle: bool = False):
    """A model given on the line, resolved (a folder, or a Hub id: io/model_ref.py)."""
    from .io.model_ref import resolve_model

    return None if model is None else resolve_model(model, allow_pickle=allow_pickle)


def _refuse_darwin_only(**given: bool) -> None:
    """Options of darwin's own evaluator have no effect through lm-eval: refuse them."""
    for name, is_set in given.items():
        if is_set:
            raise UsageError(f"--{name.replace('_', '-')} applies to --backend darwin only")


def _print_all(items: list) -> None:
    """Print a summary the library formatted (rich tables and markup lines)."""
    for item in items:
        out.print(item)


def _merge_settings(transplant_low: float, transplant_high: float, disjoint_mean: bool,
                    compute_dtype: str):
    from .merge.plan import make_settings

    return make_settings(transplant_low=transplant_low, transplant_high=transplant_high,
                         disjoint_mean=disjoint_mean, compute_dtype=compute_dtype)


def _genome_of(path: Path | None):
    from .genome import Genome, load_genome

    return Genome() if path is None else load_genome(path)


@app.command("merge")
def merge_cmd(
    father: FatherOrNone = None,
    mother: MotherOrNone = None,
    out_dir: Path | None = typer.Option(None, "--out", help="child folder to create",
                                        show_default="required"),
    base: Base = None,
    genome: GenomeFile = None,
    scan: ScanFile = None,
    device: Device = "cpu",
    dtype: str | None = typer.Option(None, help="the child's dtype", show_default="the father's"),
    overwrite: Overwrite = False,
    shard_size: str = typer.Option("2GB", help="largest output shard, e.g. 500MB"),
    transplant_low: TransplantLow = TRANSPLANT_LOW,
    transplant_high: TransplantHigh = TRANSPLANT_HIGH,
    disjoint_mean: DisjointMean = False,
    compute_dtype: ComputeDtype = "float32",
    threads: int = typer.Option(1, min=1, help="torch CPU threads (same child for any)"),
    allow_pickle: bool = typer.Option(False, help="read .bin pickle parents (weights_only)"),
    trust_remote_code: bool = typer.Option(
        False, help="accept parents whose config asks for code (the code is never run)"),
    tokenizer_source: str = typer.Option(
        "union", help="child vocabulary when the parents' differ: father, mother or union"),
    mergekit_config: Path | None = typer.Option(
        None, help="run a mergekit YAML (linear, ties, dare_ties, task_arithmetic) instead "
        "of a genome; its models replace --father/--mother (docs/MERGE.md)"),
    models: list[str] | None = typer.Option(
        None, "--model", help="N parents instead of --father/--mother, in order (repeat it); "
        "--genome is then an N-parent genome (docs/MERGE.md, \"N parents\")",
        show_default="none"),
) -> None:
    """Merge father and mother into a child, tensor by tensor (DARE-TIES + transplant),
    N parents (--model, repeated), or run a mergekit config (--mergekit-config) with
    darwin's engine."""
    from .merge import merge_models
    from .merge.plan import parse_size
    from .records import file_names

    if models:
        _refuse_with_models(father=father, mother=mother, scan=scan,
                            mergekit_config=mergekit_config, disjoint_mean=disjoint_mean,
                            tokenizer_source=tokenizer_source != "union",
                            transplant_low=transplant_low != TRANSPLANT_LOW)
        if out_dir is None:
            raise UsageError("missing --out")
        path = _merge_multi(models, out_dir, base, genome, allow_pickle,
                            settings=_merge_settings(transplant_low, transplant_high, False,
                                                     compute_dtype),
                            device=device, dtype=dtype, overwrite=overwrite,
                            shard_size=parse_size(shard_size), threads=threads,
                            trust_remote_code=trust_remote_code)
        out.print(f"child written to {path} (recipe in {path / file_names.MERGE_RECORD})")
        return
    if mergekit_config is not None:
        _merge_mergekit(mergekit_config, out_dir, dict(father=father, mother=mother,
                                                       base=base, genome=genome, scan=scan),
                        device=device, dtype=dtype, overwrite=overwrite,
                        shard_size=parse_size(shard_size), threads=threads,
                        allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        return
    missing = [f"--{k}" for k, v in (("father", father), ("mother", mother), ("out", out_dir))
               if v is None]
    if missing:
        raise UsageError("missing " + ", ".join(missing) + " (or give --mergekit-config FILE)")
    settings = _merge_settings(transplant_low, transplant_high, disjoint_mean, compute_dtype)
    father, mother, base = (_ref(m, allow_pickle) for m in (father, mother, base))
    path = merge_models(father, mother, out_dir, base=base, genome=_genome_of(genome), scan=scan,
                        settings=settings, device=device, dtype=dtype, overwrite=overwrite,
                        shard_size=parse_size(shard_size), threads=threads,
                        allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                        tokenizer_source=tokenizer_source)
    out.print(f"child written to {path} (recipe in {path / file_names.MERGE_RECORD})")


def _refuse_with_models(**given) -> None:
    """Options that have no meaning beside --model (N parents): refused, not ignored."""
    used = [f"--{k.replace('_', '-')}" for k, v in given.items() if v not in (None, False)]
    if used:
        raise UsageError(f"{', '.join(used)}: not used with --model (N parents are given by "
                         "--model alone, their genome by --genome; no scan, one vocabulary)")


def _merge_multi(models: list[str], out_dir: Path, base: str | None, genome: Path | None,
                 allow_pickle: bool, **options) -> Path:
    from .merge.engine import merge_models_multi

    chosen = _multi_genome_of(genome, len(models))
    refs = [_ref(m, allow_pickle) for m in models]
    return merge_models_multi(refs, out_dir, genome=chosen, base=_ref(base, allow_pickle),
                              allow_pickle=allow_pickle, **options)


def _multi_genome_of(path: Path | None, count: int):
    """An N-parent genome file, or task arithmetic at lambda 1 over `count` parents."""
    from .multi_genome import MultiGenome, load_multi_genome

    if count < 2:
        raise UsageError("give at least two --model (or --father and --mother)")
    return (MultiGenome.task_vectors(count, scale=1.0) if path is None
            else load_multi_genome(path))


def _plan_multi(models: list[str], base: str | None, genome: Path | None, settings,
                as_json: bool) -> None:
    from .merge.multi_plan import plan_models_multi, shares_summary

    chosen = _multi_genome_of(genome, len(models))
    rows = plan_models_multi([_ref(m) for m in models], chosen, base=_ref(base),
                             settings=settings)
    if as_json:
        out.print_json(json.dumps({"genome": chosen.model_dump(),
                                   "tensors": [r.to_dict() for r in rows]}))
    else:
        _print_all(shares_summary(rows))


def _merge_mergekit(config: Path, out_dir: Path | None, genome_options: dict, **options
                    ) -> None:
    from .mergekit import merge_from_config

    given = [f"--{k}" for k, v in genome_options.items() if v is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: not used with --mergekit-config (the config "
                         "names the models and their weights)")
    out_dir = out_dir or Path(f"{config.stem}-merged")
    path = merge_from_config(config, out_dir, **options)
    out.print(f"child written to {path} (config in {path / 'mergekit_config.yml'})")


@app.command("export-mergekit")
def export_mergekit_cmd(
    run: Path = typer.Argument(..., help="RUN_DIR, child folder, darwin_merge.json or "
                               "genome YAML"),
    out_file: Path | None = typer.Option(None, "--out", help="YAML file to write",
                                         show_default="print it"),
    father: FatherOrNone = None,
    mother: MotherOrNone = None,
    base: Base = None,
    models: list[str] | None = typer.Option(
        None, "--model", help="an N-parent genome's models, in order (repeat it)",
        show_default="the record's"),
) -> None:
    """Write the closest mergekit YAML for a darwin genome (approximate; its header says
    what does not carry over). Models: the run's, or --father/--mother/--base (N parents:
    --model, repeated)."""
    from .io.files import write_text_atomic
    from .mergekit.export import export_mergekit, read_source
    from .mergekit.export_multi import export_mergekit_multi, read_multi_source

    multi = read_multi_source(run, models, base)
    if multi is not None:
        _refuse_with_models(father=father, mother=mother)
        text = export_mergekit_multi(multi.genome, multi.models, multi.base, multi.settings,
                                     multi.dtype, multi.origin)
    elif models:
        raise UsageError(f"{run}: a two-parent genome or merge; give --father and --mother, "
                         "not --model")
    else:
        text = export_mergekit(read_source(run, father, mother, base))
    if out_file is None:
        sys.stdout.write(text)
    else:
        out.print(f"mergekit config written to {write_text_atomic(out_file, text)}")


@app.command("plan")
def plan_cmd(
    father: FatherOrNone = None,
    mother: MotherOrNone = None,
    base: Base = None,
    genome: GenomeFile = None,
    scan: ScanFile = None,
    as_csv: bool = typer.Option(False, "--csv", help="print CSV"),
    as_json: AsJson = False,
    transplant_low: TransplantLow = TRANSPLANT_LOW,
    transplant_high: TransplantHigh = TRANSPLANT_HIGH,
    disjoint_mean: DisjointMean = False,
    compute_dtype: ComputeDtype = "float32",
    models: list[str] | None = typer.Option(
        None, "--model", help="N parents instead of --father/--mother, in order (repeat it)",
        show_default="none"),
) -> None:
    """Show the per-tensor merge recipe (ratios and modes, or each of N parents' shares)
    without writing weights."""
    from .genome import genome_hash
    from .merge import plan_models
    from .merge.plan import plan_summary, plan_to_csv

    settings = _merge_settings(transplant_low, transplant_high, disjoint_mean, compute_dtype)
    if models:
        _refuse_with_models(father=father, mother=mother, scan=scan, csv=as_csv,
                            transplant_low=transplant_low != TRANSPLANT_LOW)
        _plan_multi(models, base, genome, settings, as_json)
        return
    missing = [f"--{k}" for k, v in (("father", father), ("mother", mother)) if v is None]
    if missing:
        raise UsageError("missing " + ", ".join(missing) + " (or give --model N times)")
    chosen = _genome_of(genome)
    father, mother, base = _ref(father), _ref(mother), _ref(base)
    rows = plan_models(father, mother, base=base, genome=chosen, scan=scan, settings=settings)
    if as_json:
        out.print_json(json.dumps({"genome": chosen.model_dump(),
                                   "genome_hash": genome_hash(chosen, settings),
                                   "tensors": [r.to_dict() for r in rows]}))
    elif as_csv:
        sys.stdout.write(plan_to_csv(rows))
    else:
        _print_all(plan_summary(rows, scan is not None))


@app.command("card")
def card_cmd(
    child_dir: Path = typer.Argument(..., help="child model folder (gets README.md)"),
    run: Path | None = typer.Option(None, "--run", help="run folder of `darwin evolve` "
                                    "(adds scores, scan, health; writes RUN/report.html)"),
    father_id: str | None = typer.Option(None, help="the father's Hub id (org/name)",
                                         show_default="its config's, if a Hub id"),
    mother_id: str | None = typer.Option(None, help="the mother's Hub id (org/name)",
                                         show_default="its config's, if a Hub id"),
) -> None:
    """Write the child's model card (README.md) from its records, and the run's report.

    The card's `base_model` lists the parents' Hub ids; a parent known only by its local
    folder is left out of it and named in the card's text.
    """
    from .card.build import write_card
    from .records import file_names

    given = {"father": father_id, "mother": mother_id}
    path = write_card(child_dir, run, {role: i for role, i in given.items() if i is not None})
    out.print(f"card written to {path}")
    if run is not None:
        out.print(f"report written to {run / file_names.REPORT}")


@app.command("push")
def push_cmd(
    child_dir: Path = typer.Argument(..., help="child model folder, with its card"),
    repo_id: str = typer.Argument(..., help="the Hub repository to create or update "
                                  "(org/name)"),
    private: bool = typer.Option(False, help="create the repository private"),
    dry_run: bool = typer.Option(False, help="check and list the files; upload nothing"),
) -> None:
    """Upload the child, its card and pictures to the Hub (huggingface_hub's login).

    Checked offline first: weights and config readable, the card's metadata parses, its
    base_model names Hub ids (no local path), its model-index reads back unchanged.
    """
    from .card.publish import push, upload_plan

    plan = upload_plan(child_dir, repo_id)
    out.print(f"{len(plan.files)} files for {plan.repo_id}: {', '.join(plan.files)}",
              highlight=False, soft_wrap=True)
    if not dry_run:
        out.print(f"uploaded: {push(plan, private=private)}", highlight=False)


@app.command("scan")
def scan_cmd(
    father: Father = ...,
    mother: Mother = ...,
    out_dir: Path = typer.Option(..., "--out", help="SCAN_DIR to create (scan.json + PNGs)"),
    probes: Probes = None,
    probe_weights: str | None = typer.Option(None, help="e.g. REASONING=2,CODE=1",
                                             show_default="equal"),
    device: Device = "cpu",
    dtype: Dtype = "float32",
    eval_dtype: EvalDtype = None,
    max_tokens: MaxTokens = 64,
    max_prompts: MaxPrompts = None,
    batch_size: BatchSize = 8,
    overwrite: Overwrite = False,
    mri: MriFormula = "attribution",
    fitness: str | None = typer.Option(
        None, help="tasks the ratios serve, e.g. arc_easy=0.5,two_digit_arithmetic=0.5 "
                   "(their search items are probed; without it: the probe sets' text)"),
    base: Base = None,
    attribution_items: ScanItems = 32,
    attribute_probe_sets: bool = typer.Option(
        True, help="with --fitness, also attribute the probe sets' text (shown in the "
        "picture only; --no-attribute-probe-sets takes about a third of the time)"),
    temperature: float = typer.Option(1.0, help="attribution z per logit unit of the ratio"),
) -> None:
    """Model Diagnostic Scan: static profiles, layer-skip probes, skill attribution, ratios."""
    from .evolve.recipe import parse_fitness
    from .genome import Genome
    from .merge.plan import plan_by_layer, plan_models
    from .scan import run_scan, summary_lines
    from .scan.probes import parse_weights

    father, mother, base = _ref(father), _ref(mother), _ref(base)
    scan = run_scan(father, mother, out_dir, probes=probes, device=device, dtype=dtype,
                    max_tokens=max_tokens, batch_size=batch_size, max_prompts=max_prompts,
                    probe_weights=parse_weights(probe_weights), overwrite=overwrite,
                    formula=mri, fitness=parse_fitness(fitness) if fitness else None, base=base,
                    attribution_items=attribution_items, temperature=temperature,
                    eval_dtype=eval_dtype, attribute_probe_sets=attribute_probe_sets)
    for line in summary_lines(scan):
        out.print(line, highlight=False, soft_wrap=True)
    rows = plan_models(father, mother, base=base, genome=Genome.scan_only(), scan=out_dir)
    out.print("the scan-only child (no search: every tensor at its mri_ratio), layer by layer:")
    for line in plan_by_layer(rows):
        out.print(f"  {line}", highlight=False, soft_wrap=True)
    pictures = "mds_father_mother.png, mri_ratio.png" + (
        ", attribution.png" if scan.attribution is not None else "")
    out.print(f"scan written to {out_dir} (scan.json, {pictures})")


bench_app = typer.Typer(no_args_is_help=True,
                        help="Benchmarks of merge quality (docs/BENCHMARKS.md).")
app.add_typer(bench_app, name="bench")


@bench_app.command("quality")
def bench_quality_cmd(
    problems: list[str] = typer.Argument(
        None, help="problem names (benchmark/problems/) or .yaml files", show_default=
        "the three SmolLM2 problems"),
    run_dir: Path = typer.Option(Path("runs/bench-quality"), "--out",
                                 help="the benchmark's folder (continued when killed)"),
    cache: Cache = Path(".cache"),
    device: Device = "cpu",
    mode: str = typer.Option("quick", help="quick (24 candidates on 50 items) or full "
                             "(make demo's budget)"),
    seeds: str = typer.Option("0,1,2", help="search seeds, comma-separated"),
    test_seed: int = typer.Option(2026, help="seed of the fresh test items (2026: the "
                                  "published table's; develop with another)"),
    trials: int | None = typer.Option(None, help="Phase 2 candidates per seed",
                                      show_default="the mode's"),
    limit: int | None = typer.Option(None, help="search items per fitness task",
                                     show_default="the mode's"),
    genome_rule: str | None = typer.Option(None, help="v2 or v3 (docs/EVOLVE.md)",
                                           show_default="evolve's"),
    guard_rule: str | None = typer.Option(None, help="floor or paired (docs/EVOLVE.md)",
                                          show_default="evolve's"),
    sigma0: float | None = typer.Option(None, help="CMA-ES's step size in Phase 2",
                                        show_default="evolve's"),
) -> None:
    """Merge quality: each problem searched with several seeds, the children scored with
    the tuned standard recipes on test items nobody has looked at."""
    import shlex
    import sys

    from darwin_recipes.benchmark.report import summary_table
    from darwin_recipes.benchmark.run import QUICK_PROBLEMS, run_benchmark

    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError as exc:
        raise UsageError(f"--seeds: not a list of integers: {seeds!r}") from exc
    results = run_benchmark(list(problems or QUICK_PROBLEMS), run_dir, cache, mode, seed_list,
                            test_seed, device,
                            command="darwin " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                            trials=trials, limit=limit, genome_rule=genome_rule,
                            guard_rule=guard_rule, sigma0=sigma0)
    out.print("\n".join(summary_table(results)), markup=False, highlight=False, soft_wrap=True)


demo_app = typer.Typer(no_args_is_help=True,
                       help="The demo: a tiny trio in two minutes, or the real SmolLM2 one.")
app.add_typer(demo_app, name="demo")


@demo_app.command("run")
def demo_run_cmd(
    family: str = typer.Option("smollm2", help="tiny (about 2 minutes), smollm2 or gemma3"),
    cache: Cache = Path(".cache"),
    run_dir: Path | None = typer.Option(None, "--out", help="RUN_DIR",
                                        show_default="runs/demo-FAMILY[-PAIR]"),
    pair: str = typer.Option("specialists", help="specialists (two one-skill fine-tunes "
                             "and their base; tiny's trio is one) or father-mother (a real "
                             "model and its arithmetic fine-tune; smollm2 and gemma3)"),
    device: Device = "cpu",
    trials: int | None = typer.Option(None, help="Phase 2 candidates"),
    limit: int | None = typer.Option(None, help="search items per fitness task",
                                     show_default="the family's preset"),
    holdout_limit: int | None = typer.Option(None, help="holdout items per task",
                                             show_default="the family's preset"),
    eval_dtype: str | None = typer.Option(
        None, help="dtype of the forward passes (float32 on a CPU without AMX or "
        "AVX512-BF16, where bfloat16 is slow)", show_default="the family's preset"),
    fresh: bool = typer.Option(False, help="redo a completed demo (the study is continued)"),
) -> None:
    """The whole job on a pair: parents, scan, evolve, merge, check, eval, card, report."""
    from darwin_recipes.demo.run import default_out, run_demo

    from .evolve.summary_tables import summary_tables

    summary = run_demo(family, cache, run_dir, device, fresh, pair=pair, trials=trials,
                       limit=limit, holdout_limit=holdout_limit, eval_dtype=eval_dtype)
    _print_all(summary_tables(summary, Path(run_dir or default_out(family, pair))))


@demo_app.command("test-items")
def demo_test_items_cmd(
    skill: str = typer.Argument(..., help="two_digit_arithmetic, simple_arithmetic, "
                                "letter_reversal or digit_sorting"),
    out_file: Path = typer.Option(..., "--out", help="the task file to write (JSONL)"),
    test_seed: int = typer.Option(2026, help="seed of the items (2026: the published "
                                  "tables'; develop with another)"),
    count: int = typer.Option(500, help="how many items"),
) -> None:
    """Fresh test items of a synthetic skill: none in its shipped task file or in any
    benchmark or demo fine-tune's training problems; the same for one seed (score them with
    `darwin eval MODEL --tasks FILE`)."""
    from darwin_recipes.benchmark.run import excluded_recipes
    from darwin_recipes.demo.test_items import fresh_items, write_items

    items = fresh_items(skill, test_seed, count, excluded_recipes())
    out.print(f"{len(items)} items of {skill} (test seed {test_seed}) in "
              f"{write_items(items, out_file)}")


@demo_app.command("prepare-mother")
def prepare_mother_cmd(
    father: FatherOrNone = None,
    cache: Cache = Path(".cache"),
    device: Device = "cpu",
    steps: int | None = typer.Option(None, help="optimizer steps (default: the recipe's)"),
    lr: float | None = typer.Option(None, help="peak learning rate"),
    batch_size: int | None = typer.Option(None, help="problems per step"),
    first_trained_layer: int | None = typer.Option(None, help="train blocks from this one up"),
    last_trained_layer: int | None = typer.Option(
        None, help="the last trained block (default: the model's last)"),
    seed: int | None = typer.Option(None, help="seed of the data and the run"),
    max_operands: int | None = typer.Option(None, help="most operands per training problem"),
    skill: str | None = typer.Option(
        None, help="two_digit_arithmetic, simple_arithmetic, letter_reversal or "
        "digit_sorting"),
    threads: int | None = typer.Option(None, help="CPU threads for torch (not in the hash)"),
    train_embeddings: bool | None = typer.Option(
        None, "--train-embeddings/--no-train-embeddings",
        help="also train the token embeddings (tied with the output head)"),
) -> None:
    """Fine-tune the father into a one-skill specialist (cached by recipe) and print its folder.

    The father is the imported SmolLM2 unless --father is given.
    """
    from darwin_recipes.demo.mother import prepare_mother, recipe_with

    from .realmodels import ensure_real_model

    recipe = recipe_with(steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                         first_trained_layer=first_trained_layer,
                         last_trained_layer=last_trained_layer, max_operands=max_operands,
                         skill=skill, threads=threads, train_embeddings=train_embeddings)
    father = _ref(father) or ensure_real_model("smollm2", cache)
    out.print(str(prepare_mother(father, cache, recipe, device=device)))


@app.command("health")
def health_cmd(
    child: str = typer.Option(..., help="child model folder (or Hub id)"),
    father: Father = ...,
    mother: Mother = ...,
    base: Base = None,
    out_dir: Path | None = typer.Option(None, "--out", help="folder for health.json + .png"),
    probes: Probes = None,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    max_tokens: MaxTokens = 64,
    max_prompts: MaxPrompts = None,
    batch_size: BatchSize = 8,
    interference_ratio: float = typer.Option(
        0.65, help="off-arc allowed / min(parents' angle, spread)"),
    interference_margin: float = typer.Option(0.02, help="allowed off-arc on top (radians)"),
    loss_margin: float = typer.Option(0.1, help="child loss above the expected (nats)"),
    overwrite: Overwrite = False,
) -> None:
    """Health check: the child against both parents (interference, function loss, NaN).

    With --base (the parents' common ancestor) a child may also lose, on a probe set, up to
    the base's loss plus each parent's own change over it (docs/HEALTH.md)."""
    from .health import HealthThresholds, run_health
    from .health.run import summary_lines
    from .memory_plan import health_plan

    thresholds = HealthThresholds(interference_ratio, interference_margin, loss_margin)
    child, father, mother, base = _ref(child), _ref(father), _ref(mother), _ref(base)
    health_plan(child, father, mother, base=base, device=device, dtype=dtype,
                batch_size=batch_size, max_tokens=max_tokens).check()
    report = run_health(child, father, mother, out_dir, overwrite, probes=probes, device=device,
                        dtype=dtype, max_tokens=max_tokens, max_prompts=max_prompts,
                        batch_size=batch_size, thresholds=thresholds, progress=True, base=base)
    for line in summary_lines(report):
        out.print(line, highlight=False, soft_wrap=True)
    if out_dir is not None:
        out.print(f"report written to {out_dir} (health.json, health.png)")


# `darwin --help` lists the commands in the order of the work, then the tools (a command
# not named here comes after them)
COMMAND_ORDER = ("inspect", "scan", "evolve", "merge", "health", "eval", "card",
                 "plan", "import-gguf", "real-model", "version")


def _place_in_help(command) -> int:
    return COMMAND_ORDER.index(command.name) if command.name in COMMAND_ORDER \
        else len(COMMAND_ORDER)


app.registered_commands.sort(key=_place_in_help)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning Darwin's errors into one line and an exit code.

    SIGTERM (a cloud machine's preemption, `kill`) is handled like Ctrl-C while Darwin
    runs, so temporary outputs are removed instead of being left behind mid-write.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return _run(args)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _run(args: list[str]) -> int:
    """Run the app once; Darwin's errors become one line and their exit code."""
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        code = app(args=args, prog_name="darwin", standalone_mode=False)
    except DarwinError as exc:
        if debug:
            raise
        console.print(f"[red]darwin: error:[/red] {escape(str(exc))}", highlight=False,
                      soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("darwin: interrupted", highlight=False)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `darwin`, `darwin demo`: the help
            out.print(exc.format_message(), end="", highlight=False, markup=False)
            return 0
        # click's (or typer's vendored click's) usage errors: bad options, missing arguments
        if hasattr(exc, "format_message") and not debug:
            console.print(f"[red]darwin: error:[/red] {escape(exc.format_message())}",
                          highlight=False)
            return UsageError.exit_code
        if type(exc).__name__ == "Abort":  # click turns Ctrl-C (SIGINT) into Abort
            console.print("darwin: interrupted", highlight=False)
            return 130
        raise
    # typer turns Ctrl-C into Exit(130), which click returns (not raises) in this mode;
    # commands themselves return None
    if code == 130:
        console.print("darwin: interrupted", highlight=False)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
