"""Tasks as data: the registry in tasks.yaml, the shipped JSONL items, and fixed splits.

Every item gets a stable split by a hash of its content (not of its position), so a
task file can be re-ordered or extended without moving old items between `search` and
`holdout`: the search tunes on one half and the card reports on the other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from ..errors import UsageError
from ..jsonl import iter_jsonl

KINDS = ("multiple_choice", "lambada", "greedy_continuation", "gsm8k", "multiple_choice_gen")
SPLITS = ("search", "holdout", "all")
USER_PROMPT = "{query}\nAnswer:"


@dataclass(frozen=True)
class Task:
    """One evaluation task: how to prompt its items and how to score them."""

    name: str
    kind: str
    prompt: str = "{query}"
    file: str | None = None  # a file under darwin_merge/data/tasks
    path: Path | None = None  # a user file (--task-file)
    max_new_tokens: int = 256
    metric: str = "acc"  # the primary score (tasks.yaml); fitness and the tables read it
    higher_is_better: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The name it is shown by in tables and results (task_label)."""
        return task_label(self.name)

    def primary(self, samples: int = 1) -> str:
        """The key of the primary score in an evaluation's result (maj@K with K samples)."""
        return f"maj@{samples}" if samples > 1 and self.metric == "exact_match" else self.metric


@dataclass(frozen=True)
class Item:
    """One question: its index in the task file (the item id), its fields, its split."""

    id: int
    doc: dict
    split: str


def task_label(name: str) -> str:
    """The name a task is shown by: a task file given by its path (its key in records and
    fitness weights) by its stem, `path/t.jsonl` -> `t`; any other task by its name."""
    return Path(name).stem if name.endswith(".jsonl") else name


def _data_dir():
    return resources.files("darwin_merge") / "data" / "tasks"


def registry() -> dict[str, Task]:
    """The shipped tasks, by name, read from tasks.yaml."""
    text = (resources.files("darwin_merge.eval") / "tasks.yaml").read_text(encoding="utf-8")
    tasks = {}
    for name, spec in yaml.safe_load(text).items():
        spec = dict(spec)
        tasks[name] = Task(name=name, kind=spec.pop("kind"), prompt=spec.pop("prompt", "{query}"),
                           file=spec.pop("file"),
                           max_new_tokens=int(spec.pop("max_new_tokens", 256)),
                           metric=spec.pop("metric"),
                           higher_is_better=bool(spec.pop("higher_is_better")), extra=spec)
    return tasks


def resolve_tasks(names: list[str] | str, task_file: str | Path | None = None) -> list[Task]:
    """Task objects for names (comma-separated string or list) plus an optional user file."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    known = registry()
    unknown = [n for n in names if n not in known and not n.endswith(".jsonl")]
    if unknown:
        raise UsageError(f"unknown task {unknown[0]!r}; known tasks: {', '.join(known)} "
                         "(or a path to a .jsonl task file)")
    tasks = [known[n] if n in known else file_task(n) for n in names]
    if task_file is not None:
        path = Path(task_file)
        tasks.append(Task(name=path.stem, kind="multiple_choice", prompt=USER_PROMPT, path=path))
        load_docs(tasks[-1])  # validate now, before any model is loaded
    if not tasks:
        raise UsageError(f"no task given; known tasks: {', '.join(known)}")
    _refuse_shared_labels(tasks)
    return tasks


def _refuse_shared_labels(tasks: list[Task]) -> None:
    """Two tasks of one run shown by one name (task files of one stem, or a file named like a
    shipped task) would be told apart by nobody: refuse them. One task named twice is fine."""
    seen: dict[str, str] = {}
    for task in tasks:
        other = seen.setdefault(task.label, task.name)
        if other != task.name:
            raise UsageError(f"tasks {other} and {task.name} would both be shown as "
                             f"{task.label!r}: give the task files different names")


def task_metric(name: str) -> tuple[str, bool]:
    """(primary metric, higher is better) of a task by name (a .jsonl path: acc)."""
    task = resolve_tasks([name])[0]
    return task.metric, task.higher_is_better


def file_task(path: str | Path) -> Task:
    """A user task named by its file path; the kind follows the first item's fields.

    `{"query", "choices", "gold"}` is multiple choice (prompt `{query}\nAnswer:`),
    `{"context", "continuation"}` is scored like simple_arithmetic (greedy continuation).
    The task's name is the path as given, so records and fitness weights key it by the path;
    tables and results show it by the file's stem (`Task.label`).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"task file {path} does not exist")
    first = next((line for line in path.read_text(encoding="utf-8").splitlines()
                  if line.strip()), "")
    try:
        doc = json.loads(first) if first else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: line 1 is not valid JSON ({exc.msg})") from exc
    if isinstance(doc, dict) and "continuation" in doc:
        task = Task(name=str(path), kind="greedy_continuation", prompt="{context}", path=path)
    else:
        task = Task(name=str(path), kind="multiple_choice", prompt=USER_PROMPT, path=path)
    load_docs(task)  # validate every line now, before any model is loaded
    return task


def load_docs(task: Task) -> list[dict]:
    """All items of a task, in file order, validated for the task's kind."""
    docs = list(iter_docs(task))
    if not docs:
        raise UsageError(f"{task.path or task.file}: no items")
    return docs


def iter_docs(task: Task):
    """The task's items one by one, each validated as it is read (so a caller that needs
    only the first few does not parse the whole file)."""
    if task.path is not None:
        if not task.path.is_file():
            raise UsageError(f"task file {task.path} does not exist")
        text, where = task.path.read_text(encoding="utf-8"), str(task.path)
    else:
        text, where = (_data_dir() / task.file).read_text(encoding="utf-8"), task.file
    for number, doc in iter_jsonl(text, where):
        problem = _check_doc(task.kind, doc)
        if problem:
            raise UsageError(f"{where}: line {number}: {problem}")
        yield doc


def _check_doc(kind: str, doc) -> str | None:
    """Why a parsed line does not fit its task kind, or None when it does."""
    if not isinstance(doc, dict):
        return "expected a JSON object"
    if kind in ("multiple_choice", "multiple_choice_gen"):
        choices, gold = doc.get("choices"), doc.get("gold")
        if not isinstance(doc.get("query"), str):
            return 'missing string field "query"'
        if not (isinstance(choices, list) and len(choices) >= 2
                and all(isinstance(c, str) and c for c in choices)):
            return '"choices" must be a list of at least two non-empty strings'
        if not (isinstance(gold, int) and not isinstance(gold, bool)
                and 0 <= gold < len(choices)):
            return f'"gold" must be an index into "choices" (0..{len(choices) - 1})'
    elif kind in ("lambada", "greedy_continuation"):
        if not (isinstance(doc.get("context"), str) and isinstance(doc.get("continuation"), str)
                and doc["continuation"]):
            return 'expected string fields "context" and "continuation"'
    elif kind == "gsm8k":
        if not (isinstance(doc.get("question"), str) and isinstance(doc.get("answer"), str)):
            return 'expected string fields "question" and "answer"'
    return None


def item_split(doc: dict) -> str:
    """`search` or `holdout`, from the SHA-256 of the item's canonical JSON (stable, ~50/50)."""
    canonical = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return "search" if digest[0] % 2 == 0 else "holdout"


def select_items(task: Task, split: str = "all", limit: int | None = None) -> list[Item]:
    """The items of `split` in file order, the first `limit` of them when given."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r} (use {', '.join(SPLITS)})")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})")
    items = []
    for i, doc in enumerate(iter_docs(task)):
        item = Item(i, doc, item_split(doc))
        if split in ("all", item.split):
            items.append(item)
        if limit is not None and len(items) == limit:
            break
    return items


def hub_dataset(task: Task) -> dict | None:
    """{path, name, split} of the Hub data set a shipped task's file comes from, or None."""
    text = (_data_dir() / "datasets.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text).get(task.file) if task.file else None
