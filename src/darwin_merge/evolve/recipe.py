"""What a search is asked to do: parents, fitness, budget, storage (CLI flags or YAML)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import UsageError, validation_line
from ..io.dtypes import DTYPE_NAMES
from ..io.model_ref import ModelField
from ..records import ScanRecord, file_names, read_record
from . import say


def parse_fitness(text: str, option: str = "--fitness") -> dict[str, float]:
    """`arc_easy=0.5,simple_arithmetic=0.5` -> {"arc_easy": 0.5, ...}; need not sum to 1.

    `--guard lambada_openai=0.05` is read the same way (task: tolerance)."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            weights[name.strip()] = float(value) if sep else 1.0
        except ValueError as exc:
            raise UsageError(f"{option}: value of {name!r} is not a number: {value!r}") from exc
    if not weights:
        raise UsageError(f"{option} is empty (e.g. {option} arc_easy=0.5,simple_arithmetic=0.5)")
    return weights


class Recipe(BaseModel):
    """A search, fully described; its identity (parents + fitness) guards a shared study."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    father: ModelField
    mother: ModelField
    base: ModelField | None = None
    fitness: dict[str, float]
    out: Path
    scan: Path | None = None
    trials: int = Field(24, description="Phase 2 candidates scored on real tasks")
    timeout: float | None = Field(None, description="Phase 2 wall-clock budget in seconds")
    phase1_steps: int = 200
    top_k: int = 8
    limit: int | None = Field(None, description="items per fitness task (search split)")
    holdout_limit: int | None = Field(None, description="holdout items per task (None: all)")
    fitness_holdout_limit: int | None = Field(
        None, description="holdout items per fitness task (None: holdout_limit; more than "
        "the split holds: all of it), where the child's paired claims are made")
    extra_tasks: list[str] = Field(default_factory=list,
                                   description="tasks outside the fitness, reported on holdout")
    guard: dict[str, float] = Field(
        default_factory=dict, description="task: tolerance; a child more than the tolerance "
        "below the base (without a base: the better parent) on the task (search split) is "
        "penalised by GUARD_PENALTY")
    guard_rule: Literal["floor", "paired"] = Field(
        "floor", description="how a guard is judged on the search items: floor (the child's "
        "score below the floor breaks it) or paired (its per-item difference from the "
        "reference more than one standard error below -tolerance: evolve/scoring.py)")
    racing: bool = Field(True, description="stop candidates early that cannot beat the best "
                         "(evolve/racing.py); False scores every candidate on every item")
    storage: str | None = None
    study: str | None = None
    device: str = "cpu"
    dtype: str = Field("float32", description="dtype the parents are held and merged in")
    eval_dtype: str | None = Field(
        None, description="dtype of every forward pass (scan probes, scoring, health check; "
        "None: dtype). bfloat16 halves the time on a CPU with AMX or AVX512-BF16 "
        "(docs/EVOLVE.md); the merge arithmetic stays in dtype")
    seed: int = 0
    batch_size: int = 16
    sigma0: float | None = Field(
        None, description="CMA-ES's first step in [0, 1] gene coordinates (None: 0.15 under "
        "genome rule v2, the best seeds' spread under v3)")
    cma: Literal["full", "separable"] = Field(
        "full", description="Phase 2's CMA-ES: full covariance, or separable (diagonal)")
    popsize: int = Field(6, description="Phase 2 CMA-ES population (small budgets: small)")
    probes: Path | None = Field(
        None, description="folder of probe sets (*.jsonl of {\"text\": ...}) the scan and the "
        "health check read; None: the five built-in English sets (docs/HEALTH.md)")
    probe_max_tokens: int = 64
    probe_max_prompts: int | None = Field(None, description="prompts per probe set (scan, health)")
    mri: Literal["attribution", "card"] = Field(
        "attribution", description="the scan's ratio formula (docs/SCAN.md)")
    scan_items: int = Field(32, description="search items per fitness task the scan probes")
    scan_probe_sets: bool = Field(
        True, description="the scan's attribution also measures the probe sets' text (only "
        "its picture shows them; False takes about a third of the attribution's time)")
    allow_warning: bool = Field(False, description="keep a child with flagged layers")
    prefer: Literal["fitness", "health"] = Field(
        "fitness", description="the child: the fittest healthy candidate, or of the Pareto "
        "front's candidates within one SE of it the one with the lowest probe excess "
        "(evolve/front.py)")
    genome_rule: Literal["v2", "v3"] = Field(
        "v2", description="the genome the search searches (docs/MERGE.md): v2, the mother's "
        "share per component and block; v3, also a task-vector scale per parent, TIES's "
        "trim, sign election and the disjoint mean, with the tuned baselines as seeds")
    baselines: Literal["none", "fixed", "tuned"] = Field(
        "tuned", description="the merges the child is compared with on the holdout: none; "
        "fixed (DARE-TIES 0.5, linear 0.5, task arithmetic 1.0); tuned (those, and task "
        "arithmetic, TIES and DARE-TIES tuned on the search split: docs/EVOLVE.md)")

    @field_validator("fitness")
    @classmethod
    def _weights_positive(cls, value: dict[str, float]) -> dict[str, float]:
        if any(not math.isfinite(w) or w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError("fitness weights must be finite, >= 0 and sum to a positive "
                             "number")
        return value

    @field_validator("guard")
    @classmethod
    def _tolerances(cls, value: dict[str, float]) -> dict[str, float]:
        if any(not math.isfinite(t) or t < 0 for t in value.values()):
            raise ValueError("guard tolerances must be finite and >= 0")
        return value

    @field_validator("trials", "phase1_steps", "top_k", "batch_size", "popsize",
                     "probe_max_tokens", "scan_items")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("sigma0", "timeout")
    @classmethod
    def _finite_positive(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError("must be a finite number > 0")
        return value

    @field_validator("dtype", "eval_dtype")
    @classmethod
    def _dtype_name(cls, value: str | None) -> str | None:
        if value is not None and value not in DTYPE_NAMES:
            raise ValueError(f"must be one of {', '.join(DTYPE_NAMES)}")
        return value

    @field_validator("limit", "holdout_limit", "fitness_holdout_limit", "probe_max_prompts")
    @classmethod
    def _limit(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("must be at least 1")
        return value

    def holdout_limit_of(self, task: str) -> int | None:
        """Holdout items of a task: fitness_holdout_limit for a fitness task when set."""
        if task in self.fitness and self.fitness_holdout_limit is not None:
            return self.fitness_holdout_limit
        return self.holdout_limit

    @property
    def forward_dtype(self) -> str:
        """The dtype models run their forward passes in: eval_dtype, else dtype."""
        return self.eval_dtype or self.dtype

    @property
    def weights(self) -> dict[str, float]:
        """Fitness weights normalised to sum to 1."""
        total = sum(self.fitness.values())
        return {k: v / total for k, v in self.fitness.items()}

    def identity(self) -> dict:
        """What a study must agree on to be continued by this recipe."""
        return {
            "father": self.father.identity(), "mother": self.mother.identity(),
            "base": self.base.identity() if self.base else None,
            "fitness": dict(sorted(self.weights.items())), "limit": self.limit,
            "guard": dict(sorted(self.guard.items())),
            **({"guard_rule": "paired"} if self.guard_rule == "paired" else {}),  # floor: as
            # before the rule existed, so that older studies continue
            "genome_rule": self.genome_rule,  # a study's trials hold values, not the rule
        }


def build_recipe(**values) -> Recipe:
    """Validate values into a Recipe; a bad value is a one-line UsageError."""
    try:
        return Recipe(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise UsageError(validation_line(exc, "recipe")) from exc


def load_recipe(path: Path, **overrides) -> Recipe:
    """A YAML recipe with the CLI's field names; CLI values given explicitly win."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, ValueError, RecursionError) as exc:
        # ValueError: YAML dates like 2001-13-01; RecursionError: absurdly deep nesting
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{path}: cannot read the recipe ({first_line})") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise UsageError(f"{path}: a recipe is a mapping of field: value")
    for key in ("fitness", "guard"):
        if isinstance(data.get(key), str):
            data[key] = parse_fitness(data[key], option=f"--{key}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return build_recipe(**data)


def check_recipe(recipe: Recipe) -> None:
    """Fail fast on what can be known before any work starts."""
    from ..eval.tasks import resolve_tasks  # imports torch: not at the CLI's start-up

    resolve_tasks([*recipe.fitness, *recipe.guard, *recipe.extra_tasks])  # unknown -> error
    for role in ("father", "mother"):
        path = getattr(recipe, role).path
        if not path.is_dir():
            raise UsageError(f"--{role} {path}: no such model folder")
    if recipe.scan is not None:
        check_scan_file(Path(recipe.scan))
    if recipe.probes is not None:
        from ..scan.probes import load_probes

        load_probes(recipe.probes)  # a missing folder or a bad line: one-line UsageError


def check_scan_file(path: Path) -> None:
    """A `--scan` must be a scan.json: its MRI ratios in [0, 1] and a per-layer table for
    both parents (`ScanRecord`)."""
    if not path.is_file():
        raise UsageError(f"--scan {path}: no such file (give the scan.json that "
                         "`darwin scan` wrote, or leave --scan out to scan first)")
    read_record(ScanRecord, path)


def ensure_scan(recipe: Recipe) -> Path:
    """The recipe's scan, or RUN_DIR/scan: reused when it was made from the same parents,
    probe items and settings (scan.json's inputs hash), recomputed when any changed."""
    if recipe.scan is not None:
        return Path(recipe.scan)
    from ..scan import run_scan

    scan_dir = Path(recipe.out) / file_names.SCAN_DIR
    say(f"scan of both parents into {scan_dir} (formula {recipe.mri}; reused when unchanged)")
    run_scan(recipe.father, recipe.mother, scan_dir, probes=recipe.probes, device=recipe.device,
             dtype=recipe.dtype, eval_dtype=recipe.eval_dtype, batch_size=recipe.batch_size,
             max_tokens=recipe.probe_max_tokens, max_prompts=recipe.probe_max_prompts,
             formula=recipe.mri, fitness=recipe.weights, base=recipe.base,
             attribution_items=recipe.scan_items, attribute_probe_sets=recipe.scan_probe_sets,
             reuse=True, overwrite=True)
    return scan_dir / file_names.SCAN
