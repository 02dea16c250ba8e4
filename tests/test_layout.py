"""The layout the docs promise: every package on the architecture page, no private imports
across modules, pictures drawn in plots/ only and without pyplot, every file darwin writes
named in records/file_names.py only."""

from __future__ import annotations

import ast
from pathlib import Path

import darwin_merge
from darwin_merge.records import file_names

PACKAGE = Path(darwin_merge.__file__).parent
ARCHITECTURE = PACKAGE.parents[1] / "docs" / "ARCHITECTURE.md"


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported_names(path: Path):
    """(module, name) of every `from module import name` in a file, (module, "") of every
    `import module`."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                yield "." * node.level + (node.module or ""), alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ""


def test_the_architecture_page_names_every_package():
    packages = [p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"]
    page = ARCHITECTURE.read_text(encoding="utf-8")
    assert packages and [p for p in packages if f"`{p}/`" not in page] == []


def test_no_module_imports_a_private_name_of_another():
    private = [(path.relative_to(PACKAGE).as_posix(), module, name)
               for path in modules() for module, name in imported_names(path)
               if name.startswith("_") and not name.startswith("__")]
    assert private == []


def test_pictures_are_drawn_in_plots_only_and_without_pyplot():
    drawing = set()
    for path in modules():
        names = [".".join(filter(None, pair)) for pair in imported_names(path)]
        assert not any("pyplot" in name for name in names), path
        assert "matplotlib.use(" not in path.read_text(encoding="utf-8"), path
        if any(name.startswith("matplotlib") for name in names):
            drawing.add(path.parent.name)
    assert drawing == {"plots"}


def spelled_file_names(path: Path, names: set[str]) -> list[str]:
    """The strings of a module that spell one of `names` (alone or at a path's end)."""
    return [node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and any(node.value == n or node.value.endswith("/" + n) for n in names)]


def test_file_names_are_spelled_in_one_module():
    names = {v for k, v in vars(file_names).items() if k.isupper() and "." in v}
    home = Path(file_names.__file__)
    assert {"summary.json", "darwin_merge.json", "report.html"} <= names
    spelled = {path.relative_to(PACKAGE).as_posix(): found for path in modules()
               if path != home and (found := spelled_file_names(path, names))}
    assert spelled == {}
