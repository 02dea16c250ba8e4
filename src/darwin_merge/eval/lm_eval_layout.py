"""darwin's scores in lm-evaluation-harness's results layout, so lm-eval's tools read them.

lm-eval writes, per task, `"<metric>,<filter>"` and `"<metric>_stderr,<filter>"` keys and an
`alias`, and at the top `versions`, `n-shot`, `configs`, `n-samples`, `higher_is_better`,
`group_subtasks`, `config` (the model and the settings) and `date`. darwin's own fields (item
ids, `mean_gold_logprob`, the split, the config hash) go under the `darwin` key, per task
under `darwin.results`.
"""

from __future__ import annotations

import time

from .. import __version__
from .tasks import Task, hub_dataset, select_items

# the filter lm-eval names when the scores are taken as computed (log-likelihood tasks); the
# generative tasks' answers are extracted from the text first
FILTER_NONE = "none"
FILTER_EXTRACT = "extract"
GENERATIVE = ("gsm8k", "multiple_choice_gen")
OUTPUT_TYPES = {"multiple_choice": "multiple_choice", "lambada": "loglikelihood",
                "greedy_continuation": "loglikelihood", "gsm8k": "generate_until",
                "multiple_choice_gen": "generate_until"}
LOWER_IS_BETTER = ("perplexity",)


def metric_names(result: dict) -> list[str]:
    """The scores of one task's result that carry a standard error (acc, maj@4, ...)."""
    return [key for key in result if f"{key}_stderr" in result]


def lm_eval_layout(results: dict[str, dict], tasks: list[Task], *, model: str, config: dict,
                   darwin: dict) -> dict:
    """One results file in lm-eval's layout from darwin's per-task results.

    `config` holds the settings (batch size, device, limit, ...); `darwin` the fields that
    have no lm-eval place (the config hash, the version, the time taken).
    """
    by_name = {t.name: t for t in tasks}
    layout = {"results": {}, "group_subtasks": {}, "configs": {}, "versions": {}, "n-shot": {},
              "higher_is_better": {}, "n-samples": {}}
    extras = {}
    for name, result in results.items():
        task, metrics = by_name[name], metric_names(result)
        flt = FILTER_EXTRACT if task.kind in GENERATIVE else FILTER_NONE
        # lm-eval's alias is the name a task is shown by (a task file: its stem)
        scores = {"alias": task.label, "name": name, "sample_len": result["n"]}
        for metric in metrics:
            stderr = result[f"{metric}_stderr"]
            scores[f"{metric},{flt}"] = result[metric]
            scores[f"{metric}_stderr,{flt}"] = "N/A" if stderr is None else stderr
        layout["results"][name] = scores
        layout["group_subtasks"][name] = []
        layout["configs"][name] = task_config(task, metrics, result["split"])
        layout["versions"][name] = __version__
        layout["n-shot"][name] = 0
        layout["higher_is_better"][name] = {m: m not in LOWER_IS_BETTER for m in metrics}
        layout["n-samples"][name] = {"original": _available(task, result["split"]),
                                     "effective": result["n"]}
        shown = set(metrics) | {f"{m}_stderr" for m in metrics}
        extras[name] = {k: v for k, v in result.items() if k not in shown}
    settings = {**config, "batch_size": str(config.get("batch_size"))}  # lm-eval: a string
    layout.update(config={"model": "darwin", "model_args": f"pretrained={model}", **settings},
                  date=time.time(), model_name=model,
                  darwin={**darwin, "results": extras})
    return layout


def task_config(task: Task, metrics: list[str], split: str) -> dict:
    """lm-eval's `configs` entry of a task: its data set, prompt, output type and metrics."""
    dataset = hub_dataset(task)
    source = ({"dataset_path": dataset["path"], "dataset_name": dataset["name"],
               "test_split": dataset["split"]} if dataset is not None
              else {"dataset_path": str(task.path or task.file), "dataset_name": None,
                    "test_split": None})
    return {"task": task.name, **source,
            "output_type": OUTPUT_TYPES[task.kind], "doc_to_text": task.prompt,
            "num_fewshot": 0,
            "metric_list": [{"metric": m, "aggregation": "mean",
                             "higher_is_better": m not in LOWER_IS_BETTER} for m in metrics],
            "metadata": {"version": __version__, "darwin_split": split,
                         "darwin_file": task.file or str(task.path)}}


def _available(task: Task, split: str) -> int:
    return len(select_items(task, split, None))
