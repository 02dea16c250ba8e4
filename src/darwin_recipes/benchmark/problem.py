"""A merge problem as data: its parents (a real base and fine-tune recipes, or the tiny trio),
fitness, guards, and the test items it is judged on. One YAML schema for the benchmark's
problems and the demo's pairs (benchmark/problems/*.yaml).

    name: smollm2-specialists-disjoint
    family: smollm2                  # the real model (realmodels.py), or tiny
    father: {skill: two_digit_arithmetic, lr: 4.0e-4, last_trained_layer: 14, ...}
    mother: {skill: letter_reversal, steps: 100, ...}   # or `base`: the real model itself
    merge_with_base: true            # the base is the merge's base (task vectors)
    fitness: {two_digit_arithmetic: 0.5, letter_reversal: 0.5}
    guard: {arc_easy: 0.10, lambada_openai: 0.05}
    test: {two_digit_arithmetic: 200, letter_reversal: 200}   # fresh items per skill

A parent's mapping holds demo/mother.py's MotherRecipe fields (the cached fine-tune's hash
is the recipe's, so a problem and the demo share one folder when their recipes agree).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from darwin_merge.errors import UsageError, validation_line

BASE = "base"  # a parent that is the real model itself (the father-mother problem's father)
TINY = "tiny"  # the tiny trio's family (demo/tiny.py): its parents and task files are its own


class Problem(BaseModel):
    """One merge problem (the schema of benchmark/problems/*.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    family: str = Field(description="the real model of realmodels.py, or tiny")
    father: Literal["base"] | dict[str, Any] | None = None
    mother: Literal["base"] | dict[str, Any] | None = None
    parents: list[dict[str, Any]] | None = Field(
        None, description="N >= 2 fine-tune recipes instead of father and mother (roles "
        "model_1 .. model_N, merged with --model)")
    merge_with_base: bool = True
    fitness: dict[str, float]
    guard: dict[str, float] = Field(default_factory=dict)
    extra_tasks: list[str] = Field(default_factory=list)
    test: dict[str, int] = Field(
        default_factory=dict, description="fresh test items per synthetic skill (the "
        "benchmark's --test-seed draws them); every other task is judged on its holdout")
    specialists_of: str | None = Field(
        None, description="the problem whose specialists these must match on their skills "
        "(at least SPECIALIST_SHARE of their test score, else this problem is invalid)")
    budget: dict[str, Any] = Field(default_factory=dict,
                                   description="Recipe fields for this problem (both modes)")
    demo: dict[str, Any] | None = Field(
        None, description="the budget `make demo` runs this pair with (Recipe fields, over "
        "`budget`); None: not a demo pair")

    @field_validator("father", "mother")
    @classmethod
    def _known_recipe(cls, value):
        if isinstance(value, dict):
            _check_recipe(value)
        return value

    @field_validator("parents")
    @classmethod
    def _known_recipes(cls, value):
        for spec in value or ():
            _check_recipe(spec)
        return value

    @model_validator(mode="after")
    def _parents(self):
        if self.family == TINY:
            if (self.father, self.mother, self.parents) != (None, None, None) or self.test:
                raise ValueError("the tiny family's parents and test items are the trio's "
                                 "own: no father, mother, parents or test")
            return self
        if self.parents is not None:
            if self.father is not None or self.mother is not None or len(self.parents) < 2:
                raise ValueError("`parents` lists two or more fine-tune recipes instead of "
                                 "father and mother")
        elif self.father is None or self.mother is None:
            raise ValueError("a real family's problem names its father and mother (a "
                             "fine-tune recipe, or `base`), or its `parents`")
        if self.merge_with_base and BASE in (self.father, self.mother):
            raise ValueError("a parent that is the base cannot be merged with the base "
                             "(merge_with_base: false)")
        unknown = set(self.test) - set(self.tasks())
        if unknown:
            raise ValueError(f"test items for {', '.join(sorted(unknown))}: not a task of "
                             "the problem")
        return self

    def roles(self) -> dict[str, Literal["base"] | dict[str, Any] | None]:
        """{role: its recipe (or `base`)}: father and mother, or model_1 .. model_N."""
        if self.parents is None:
            return {"father": self.father, "mother": self.mother}
        return {f"model_{i}": spec for i, spec in enumerate(self.parents, start=1)}

    def recipes(self) -> dict[str, object]:
        """{role: MotherRecipe} of the parents that are fine-tunes."""
        return {role: fine_tune_recipe(spec) for role, spec in self.roles().items()
                if isinstance(spec, dict)}

    def weights(self) -> dict[str, float]:
        total = sum(self.fitness.values())
        return {task: w / total for task, w in self.fitness.items()}

    def tasks(self) -> list[str]:
        """Fitness, guard and extra tasks, each once, in that order."""
        return list(dict.fromkeys([*self.fitness, *self.guard, *self.extra_tasks]))


def _check_recipe(spec: dict[str, Any]) -> None:
    try:
        fine_tune_recipe(spec)
    except (UsageError, TypeError) as exc:  # an unknown field, a bad value
        raise ValueError(str(exc)) from exc


def fine_tune_recipe(spec: dict[str, Any]):
    from ..demo.mother import recipe_with  # imports torch: not at the CLI's start-up

    return recipe_with(**spec)


def problems_dir():
    return resources.files("darwin_recipes.benchmark") / "problems"


@cache
def shipped_problems() -> dict[str, Problem]:
    """Every problem shipped with Darwin, by name."""
    found = {}
    for entry in sorted(problems_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            problem = parse_problem(entry.read_text(encoding="utf-8"), entry.name)
            found[problem.name] = problem
    return found


def parse_problem(text: str, where: str) -> Problem:
    """A problem from its YAML text; a bad file is a one-line UsageError naming `where`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{where}: not YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{where}: a problem is a mapping of field: value")
    try:
        return Problem(**data)
    except ValidationError as exc:
        raise UsageError(f"{where}: {validation_line(exc, 'problem')}") from exc


def load_problem(name_or_path: str) -> Problem:
    """A shipped problem by name, or a problem file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UsageError(f"problem file {path} does not exist")
        return parse_problem(path.read_text(encoding="utf-8"), str(path))
    problems = shipped_problems()
    if name_or_path not in problems:
        raise UsageError(f"unknown problem {name_or_path!r} (known: {', '.join(problems)}; "
                         "or give a problem's .yaml file)")
    return problems[name_or_path]


def all_fine_tune_recipes() -> list:
    """Every fine-tune recipe of the shipped problems: the training problems that fresh
    test items leave out (demo/test_items.py)."""
    return [r for p in shipped_problems().values() for r in p.recipes().values()]
