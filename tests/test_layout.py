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


def recipe_imports(path: Path) -> list[tuple[str, bool]]:
    """(module, inside a function) of every import of `darwin_recipes` in a file."""
    found = []

    def visit(node, in_function: bool):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            found.extend((n, in_function) for n in names if n.split(".")[0] == "darwin_recipes")
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def test_the_library_imports_the_recipes_only_inside_the_cli_commands():
    """darwin_recipes (the demo, the benchmark) uses the library, never the other way: only
    cli.py's `demo` and `bench` commands import it, when run."""
    imports = {path.relative_to(PACKAGE).as_posix(): found for path in modules()
               if (found := recipe_imports(path))}
    assert set(imports) == {"cli.py"}
    assert all(inside for _, inside in imports["cli.py"])


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at the top or inside a function; a
    submodule's import imports its packages' __init__ too)."""
    names = {module_name(path): path for path in modules()}
    graph = {}
    for name, path in names.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found = set()
        for module, imported in imported_names(path):
            level = len(module) - len(module.lstrip("."))
            target = ".".join(here[:len(here) - level + 1] + [module.lstrip(".")]) \
                if level else module
            target = target.rstrip(".")
            full = f"{target}.{imported}" if imported else target
            found.add(full if full in names else target)
        parents = {".".join(m.split(".")[:i]) for m in found for i in range(2, m.count(".") + 1)}
        graph[name] = {m for m in found | parents
                       if m in names and m != name and not name.startswith(m + ".")}
    return graph


def test_no_import_cycle():
    """No module imports one that imports it back, directly or around a loop (card/__init__
    once imported build -> sections -> report_tables -> card.blocks -> card)."""
    graph = import_graph()
    done: set[str] = set()

    def loop_from(module: str, path: list[str]) -> list[str] | None:
        """A loop of imports reached from `module` (depth first; `path` the way down)."""
        for nxt in sorted(graph[module]):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done:
                found = loop_from(nxt, path + [nxt])
                if found:
                    return found
        done.add(module)
        return None

    assert [loop for m in sorted(graph) if (loop := loop_from(m, [m]))] == []


MERGE_KERNELS = {"dare", "dare_owned", "magnitude_trim", "magnitude_trim_fast", "ties_merge",
                 "ties_merge_pair", "merge_pair", "dare_ties", "linear", "weighted_sum",
                 "clip_bound", "blend"}


def test_one_executor_writes_children_and_runs_the_merge_arithmetic():
    """Every merge (a genome's, a mergekit YAML's, a standard recipe's) is compiled to the
    merge description and run by merge/execute.py: no other module builds the streaming
    writer of a child or imports the merge's arithmetic (merge/ops.py)."""
    writers = [path.relative_to(PACKAGE).as_posix() for path in modules()
               if "StreamingWriter(" in path.read_text(encoding="utf-8")]
    kernels = {path.relative_to(PACKAGE).as_posix(): sorted(n for m, n in imported_names(path)
                                                              if n in MERGE_KERNELS)
               for path in modules() if path.name != "ops.py"}
    assert writers == ["merge/execute.py"]
    assert {where: names for where, names in kernels.items() if names} == {
        "merge/execute.py": sorted(MERGE_KERNELS - {"dare_ties", "magnitude_trim", "dare"})}


def test_merge_modes_are_spelled_in_their_enum_only():
    """A tensor's merge mode is arch.rules.MergeMode everywhere: no module but arch/rules.py
    spells a mode that is darwin's alone (transplants, clipping bounds, exact), and none
    compares a `.mode` or `.merge_kind` with a string (`linear` and `dare_ties` are also
    mergekit's method names, which mergekit/ spells as mergekit does)."""
    from darwin_merge.arch.rules import MergeMode

    values = {m.value for m in MergeMode}
    darwin_only = values - {"linear", "dare_ties"}
    home = PACKAGE / "arch" / "rules.py"

    def strings(node):
        items = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
        return [n.value for n in items if isinstance(n, ast.Constant) and isinstance(n.value, str)]

    found = []
    for path in modules():
        if path == home:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(PACKAGE).as_posix()}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Constant) and node.value in darwin_only:
                found.append(f"{where} {node.value!r}")
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(isinstance(o, ast.Attribute) and o.attr in ("mode", "merge_kind")
                       for o in operands):
                    found += [f"{where} {s!r}" for o in operands for s in strings(o)
                              if s in values]
    assert found == []


# The modules outside records/ that parse JSON, and what they parse: none of it a file darwin
# writes as a record (those are read with records.read_record, which validates them).
JSON_READERS = {
    "card/records.py": "a child's config.json and tokenizer_config.json",
    "eval/lm_eval_backend.py": "lm-eval's results, made JSON-safe",
    "eval/tasks.py": "a task file's first line (its fields)",
    "evolve/study.py": "a study's recorded inputs, normalised through JSON for comparison",
    "io/gguf_import.py": "a GGUF package's config and tokenizer files",
    "io/reader.py": "a model folder's config, tokenizer config and shard index",
    "io/safetensors_header.py": "a safetensors header",
    "io/vocabulary.py": "a model folder's tokenizer files and config",
    "jsonl.py": "JSON Lines files (tasks, probes, samples)",
}


def test_no_module_outside_records_parses_a_record():
    """A record (summary.json, trials.json, scan.json, health.json, darwin_merge.json, ...)
    is read through records/ only, so a malformed one is a one-line RecordError and every
    reader sees the same validated type: any other module that parses JSON is listed above
    with what it parses."""
    readers = set()
    for path in modules():
        where = path.relative_to(PACKAGE).as_posix()
        if where.startswith("records/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("loads", "load") and \
                    isinstance(node.func.value, ast.Name) and node.func.value.id == "json":
                readers.add(where)
    assert readers == set(JSON_READERS)
