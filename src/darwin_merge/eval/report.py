"""Evaluate a model folder and record the results with what is needed to reproduce them."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from rich.table import Table

from .. import __version__
from ..errors import ModelFormatError, UsageError
from ..io.files import write_text_atomic
from ..io.loading import load_model, load_tokenizer
from ..io.model_ref import resolve_model
from ..records import EvalResults, parse_record, record_json
from .evaluator import evaluate
from .lm_eval_layout import lm_eval_layout, metric_names
from .results import stored
from .samples import date_id, task_hashes, write_samples
from .tasks import SPLITS, resolve_tasks, task_label

DARWIN_FIELDS = ("config_sha256", "darwin_version", "seconds")  # no place in lm-eval's layout


def config_hash(model_path: str | Path) -> str:
    """SHA-256 of the folder's config.json bytes (identifies the architecture and settings)."""
    config = Path(model_path) / "config.json"
    if not config.is_file():
        raise ModelFormatError(f"{model_path}: no config.json (not a model folder)")
    return hashlib.sha256(config.read_bytes()).hexdigest()


def evaluate_path(model_path: str | Path, tasks: list[str] | str, *, split: str = "all",
                  limit: int | None = None, batch_size: int = 16, device: str = "cpu",
                  dtype: str = "float32", task_file=None, samples: int = 1,
                  thinking: bool = False, seed: int = 0, max_new_tokens: int | None = None,
                  progress: bool = True, log_samples: bool = False) -> dict:
    """Load a model folder, score it, and return the full results record (with each task's
    per-item records under `samples` when `log_samples`)."""
    # refuse bad settings, task names and task files before loading a model
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})")
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r} (use {', '.join(SPLITS)})")
    resolve_tasks(tasks, task_file)
    digest, model, tokenizer = load_for_eval(model_path, device, dtype)
    start = time.perf_counter()
    scores = evaluate(model, tokenizer, tasks, split=split, limit=limit, batch_size=batch_size,
                      task_file=task_file, samples=samples, thinking=thinking, seed=seed,
                      max_new_tokens=max_new_tokens, progress=progress, log_samples=log_samples)
    logged = {name: result.logged_samples for name, result in scores.items()
              if result.logged_samples is not None}
    return {"model": resolve_model(model_path).identity(), "config_sha256": digest,
            "darwin_version": __version__, "seconds": round(time.perf_counter() - start, 2),
            "settings": {"tasks": tasks, "split": split, "limit": limit,
                         "batch_size": batch_size, "device": device, "dtype": dtype,
                         "task_file": None if task_file is None else str(task_file),
                         "samples": samples, "thinking": thinking, "seed": seed,
                         "max_new_tokens": max_new_tokens},
            "results": stored(scores), **({"samples": logged} if log_samples else {})}


def load_for_eval(model_path: str | Path, device: str, dtype: str):
    """(config hash, model, tokenizer) of a model folder or Hub id (no code from the
    folder runs)."""
    model_path = resolve_model(model_path)
    digest = config_hash(model_path)
    return digest, load_model(model_path, device=device, dtype=dtype), load_tokenizer(model_path)


def results_file(record: dict) -> dict:
    """The record in lm-eval's results layout (eval/lm_eval_layout.py); a record of the
    lm-eval backend is lm-eval's own results dict. With logged samples, lm-eval's
    `task_hashes` of them."""
    darwin = {k: record[k] for k in DARWIN_FIELDS}
    if "lm_eval" in record:
        layout = {**record["lm_eval"], "darwin": {**darwin, "backend": "lm-eval"}}
    else:
        settings = record["settings"]
        layout = lm_eval_layout(record["results"], resolve_tasks(settings["tasks"],
                                                                 settings["task_file"]),
                                model=record["model"], config=settings, darwin=darwin)
    if "samples" in record:
        layout["task_hashes"] = task_hashes(record["samples"])
    return layout


def write_results(record: dict, out: str | Path) -> Path:
    """Write the record in lm-eval's layout as JSON, and its logged samples beside it as
    `samples_<task>_<date>.jsonl`, each file atomically (a temp file renamed)."""
    out = Path(out)
    if "samples" in record:
        write_samples(record["samples"], out.parent, date_id())
    layout = results_file(record)
    if "lm_eval" in record:  # lm-eval's own results dict: its keys are lm-eval's
        return write_json(layout, out)
    return write_layout(layout, out)


def write_layout(layout: dict, out: str | Path) -> Path:
    """darwin's scores in lm-eval's layout (lm_eval_layout), checked against their schema
    (records.EvalResults) and written atomically."""
    return write_json(record_json(parse_record(EvalResults, layout, out)), out)


def write_json(data: dict, out: str | Path) -> Path:
    """Write `data` as JSON atomically (a temp file renamed into place)."""
    return write_text_atomic(out, json.dumps(data, indent=2) + "\n")


def results_table(record: dict) -> Table:
    """`darwin eval`'s table: every task's metrics (primary first) with their stderr; a task
    file shows as its stem."""
    table = Table(title=f"{record['model']} ({record['seconds']} s)")
    for col in ("task", "split", "n", "metric", "value", "stderr"):
        table.add_column(col)
    for name, res in record["results"].items():
        for metric in (*metric_names(res), "mean_gold_logprob"):
            if metric in res:
                se = res.get(f"{metric}_stderr")
                table.add_row(task_label(name), res["split"], str(res["n"]), metric,
                              f"{res[metric]:.4f}", "-" if se is None else f"{se:.4f}")
    return table
