"""Per-item records in lm-evaluation-harness's `--log_samples` shape (`darwin eval --log-samples`).

One record per item: `doc_id` (the item's index in the task file), `doc`, `target`,
`arguments` (the requests: one (context, continuation) pair per choice for log-likelihood
tasks, one (prompt, generation settings) pair for generative ones), `resps` (the model's raw
answers: [log-prob, is_greedy] per continuation, or the generations), `filtered_resps` (what the
metric read: the same pairs, or the answers extracted from the text), `filter`, `metrics` (their
names), `doc_hash`, `prompt_hash` and `target_hash` (SHA-256, as lm-eval computes them), and
each metric's value for the item. On disk a record is written as lm-eval writes it:
`arguments` as {"gen_args_<i>": {"arg_<j>": ...}}, `resps`, `filtered_resps` and `target` as
strings, one JSON line per item in `samples_<task>_<date>.jsonl`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

from ..io.files import write_text_atomic
from .lm_eval_layout import FILTER_EXTRACT, FILTER_NONE, GENERATIVE
from .tasks import Item, Task, task_label


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def item_target(task: Task, doc: dict):
    """The item's reference as lm-eval's task YAMLs give it (`doc_to_target`)."""
    if task.kind == "multiple_choice":
        return doc["gold"]
    if task.kind == "multiple_choice_gen":
        return chr(ord("A") + doc["gold"])
    if task.kind == "gsm8k":
        return doc["answer"]
    return (" " if task.kind == "lambada" else "") + doc["continuation"]


def sample_records(task: Task, items: list[Item], responses: list[dict],
                   item_scores: dict[str, list[float]]) -> list[dict]:
    """One record per item from its requests and answers (`responses`: arguments, resps,
    filtered_resps per item) and its scores (`item_scores`: metric -> one value per item)."""
    flt = FILTER_EXTRACT if task.kind in GENERATIVE else FILTER_NONE
    records = []
    for i, (item, answered) in enumerate(zip(items, responses, strict=True)):
        target = item_target(task, item.doc)
        records.append({
            "doc_id": item.id, "doc": item.doc, "target": target, **answered,
            "filter": flt, "metrics": list(item_scores),
            "doc_hash": sha256_text(json.dumps(item.doc, indent=2, ensure_ascii=False)),
            "prompt_hash": sha256_text(answered["arguments"][0][0]),
            "target_hash": sha256_text(str(target)),
            **{metric: values[i] for metric, values in item_scores.items()}})
    return records


def date_id() -> str:
    """The time stamp lm-eval puts in its file names (ISO 8601, ':' replaced by '-')."""
    return dt.datetime.now().isoformat().replace(":", "-")


def samples_path(folder: Path, task_name: str, stamp: str) -> Path:
    """`samples_<task>_<date>.jsonl`, a task file by its stem (task_label); only safe
    characters are kept."""
    name = re.sub(r'[^A-Za-z0-9_.-]+', '__', task_label(task_name))
    return Path(folder) / f"samples_{name}_{stamp}.jsonl"


def write_samples(samples: dict[str, list[dict]], folder: str | Path, stamp: str) -> list[Path]:
    """One JSONL file per task in `folder`, each written whole (temp file renamed)."""
    return [write_text_atomic(samples_path(Path(folder), name, stamp),
                              "".join(json.dumps(on_disk(r), ensure_ascii=False,
                                                 default=json_default) + "\n" for r in records))
            for name, records in samples.items()]


def on_disk(record: dict) -> dict:
    """A record as lm-eval's evaluation tracker saves it (see the module docstring)."""
    arguments = {f"gen_args_{i}": {f"arg_{j}": arg for j, arg in enumerate(request)}
                 for i, request in enumerate(record["arguments"])}
    return {**record, "arguments": arguments, "resps": _strings(record["resps"]),
            "filtered_resps": _strings(record["filtered_resps"]),
            "target": str(record["target"])}


def task_hashes(samples: dict[str, list[dict]]) -> dict[str, str]:
    """lm-eval's `task_hashes` of a results file: one SHA-256 over each task's item hashes."""
    return {name: sha256_text("".join(r["doc_hash"] + r["prompt_hash"] + r["target_hash"]
                                      for r in records))
            for name, records in samples.items()}


def _strings(value):
    """Every leaf as a string, lists and tuples kept (lm-eval's `sanitize_list`)."""
    if isinstance(value, (list, tuple)):
        return [_strings(v) for v in value]
    return str(value)


def json_default(value):
    """JSON for what json cannot write itself (numpy scalars from lm-eval's metrics)."""
    return value.item() if hasattr(value, "item") else str(value)
