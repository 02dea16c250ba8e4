"""`darwin eval --backend lm-eval`: any lm-evaluation-harness task, scored by lm-eval itself.

The model folder is loaded as darwin loads it (no code from the folder runs) and handed to
lm-eval's `HFLM` as an in-memory model; `lm_eval.simple_evaluate` runs the tasks. lm-eval
reads each task's data through `datasets`: its shipped tasks download from the Hugging Face
Hub, a task YAML of your own (`--lm-eval-include DIR`) can read local files
(`dataset_path: json`). The record's results file is lm-eval's own results dict, with
darwin's fields under `darwin` (eval/report.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import __version__
from ..errors import UsageError
from ..io.model_ref import resolve_model
from .report import load_for_eval
from .samples import json_default

INSTALL = "pip install 'darwin-merge[lm-eval]'"


def import_lm_eval():
    """(simple_evaluate, HFLM, TaskManager), or a one-line error saying how to install them."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise UsageError(f"--backend lm-eval needs lm-evaluation-harness ({exc.name} is not "
                         f"installed): {INSTALL}") from exc
    return simple_evaluate, HFLM, TaskManager


def run_lm_eval(model, tokenizer, tasks: list[str], *, limit: int | None = None,
                batch_size: int = 16, include_path: str | Path | None = None,
                log_samples: bool = False) -> dict:
    """lm-eval's results dict for an in-memory model, made plain JSON (its task configs may
    hold functions); the per-item records under `samples` when `log_samples`."""
    simple_evaluate, HFLM, TaskManager = import_lm_eval()
    manager = TaskManager(include_path=None if include_path is None else str(include_path))
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UsageError(f"lm-eval has no task {unknown[0]!r} (a task YAML of your own: "
                         "--lm-eval-include DIR)")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    results = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit,
                              log_samples=log_samples,  # these two only go into `config`
                              # (as strings, as its schema and its CLI have them):
                              batch_size=str(batch_size), device=str(lm.device))
    return json.loads(json.dumps(results, default=json_default))


def evaluate_path_lm_eval(model_path: str | Path, tasks: list[str] | str, *,
                          limit: int | None = None, batch_size: int = 16, device: str = "cpu",
                          dtype: str = "float32", include_path: str | Path | None = None,
                          log_samples: bool = False) -> dict:
    """Load a model folder, score it with lm-eval, and return a results record shaped as
    `evaluate_path`'s (its `results` per task, `lm_eval` the layout as lm-eval wrote it)."""
    names = [n.strip() for n in tasks.split(",") if n.strip()] if isinstance(tasks, str) \
        else list(tasks)
    if not names:
        raise UsageError("no task given (lm-eval task names, e.g. --tasks arc_easy)")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})")
    import_lm_eval()  # refuse before loading a model
    digest, model, tokenizer = load_for_eval(model_path, device, dtype)
    start = time.perf_counter()
    layout = run_lm_eval(model, tokenizer, names, limit=limit, batch_size=batch_size,
                         include_path=include_path, log_samples=log_samples)
    samples = layout.pop("samples", {})
    record = {"model": resolve_model(model_path).identity(), "config_sha256": digest,
              "darwin_version": __version__, "seconds": round(time.perf_counter() - start, 2),
              "settings": {"tasks": names, "limit": limit, "batch_size": batch_size,
                           "device": device, "dtype": dtype, "backend": "lm-eval",
                           "lm_eval_include": None if include_path is None
                           else str(include_path)},
              "results": darwin_scores(layout), "lm_eval": layout}
    return record | ({"samples": samples} if log_samples else {})


def darwin_scores(layout: dict) -> dict[str, dict]:
    """Per task of an lm-eval results dict: each `metric,filter` score under `metric` (filter
    `none`) or `metric,filter`, its standard error beside it (None for "N/A"), and n."""
    scores = {}
    for task, result in layout["results"].items():
        row = {"split": "lm-eval", "n": result.get("sample_len", "-")}
        for key, value in result.items():
            metric, _, flt = key.partition(",")
            if not flt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            name = metric if flt == "none" else key
            stderr = result.get(f"{metric}_stderr,{flt}")
            row[name] = value
            row[f"{name}_stderr"] = stderr if isinstance(stderr, (int, float)) else None
        scores[task] = row
    return scores

