"""README.md: the model card a hub shows, with YAML front matter that hubs read."""

from __future__ import annotations

import yaml
from huggingface_hub import EvalResult, ModelCardData

from ..eval.tasks import hub_dataset, registry
from .blocks import Bullets, Code, Picture, Section, Table
from .records import RunRecords

TAGS = ["merge", "darwin", "dare_ties"]


def card_license(rec: RunRecords) -> str | None:
    """The parents' licence when all of them declare the same one; 'other' when they
    declare different ones; None (the field is left out) when any is unknown."""
    licenses = [p.license for p in rec.parents]
    if not licenses or any(lic is None for lic in licenses):
        return None
    return licenses[0] if len(set(licenses)) == 1 else "other"


def front_matter(rec: RunRecords) -> dict:
    """The hub metadata, built by huggingface_hub's ModelCardData so the Hub accepts it:
    licence, parents (hub ids only: a parent known by its local folder alone is named in the
    text instead), tags, task, and the holdout results on Hub data sets."""
    parents = [p.hub_id for p in rec.parents if p.role in ("father", "mother") and p.hub_id]
    results = eval_results(rec)
    data = ModelCardData(license=card_license(rec), base_model=parents or None,
                         base_model_relation="merge" if parents else None, tags=list(TAGS),
                         pipeline_tag="text-generation", library_name="transformers",
                         model_name=rec.name if results else None,
                         eval_results=results or None)
    return data.to_dict()


def eval_results(rec: RunRecords) -> list[EvalResult]:
    """The child's holdout scores on tasks whose items come from a Hub data set (the others
    are in the card's Benchmarks table only: the Hub names data sets by their Hub id)."""
    holdout = rec.holdout
    child = holdout.models.get("child", {})
    shipped = registry()
    results = []
    for task, spec in holdout.tasks.items():
        dataset = hub_dataset(shipped[task]) if task in shipped else None
        scores = child.get(task)
        value = scores.get(spec.metric) if isinstance(scores, dict) and spec.metric else None
        if dataset is None or value is None:
            continue
        metric = spec.metric
        items = f"{'the' if spec.n is None else spec.n} held-out items of {dataset['split']}"
        results.append(EvalResult(
            task_type="text-generation", task_name="Text Generation",
            dataset_type=dataset["path"], dataset_name=f"{task} ({items})",
            dataset_config=dataset["name"], dataset_split=dataset["split"],
            dataset_args={"num_few_shot": spec.shots or 0},
            metric_type=metric, metric_value=float(value), metric_name=f"{metric} ({items})"))
    return results


def render_markdown(meta: dict, sections: list[Section]) -> str:
    """Front matter, then the sections (the first one is the title)."""
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    parts = [f"---\n{head}---\n"]
    for i, section in enumerate(sections):
        parts.append(f"{'#' if i == 0 else '##'} {section.title}\n")
        parts += [_block(block) for block in section.blocks]
    return "\n".join(parts).rstrip() + "\n"


def markdown_blocks(blocks: list) -> str:
    """Content blocks as Markdown (RESULTS.md renders report_tables' content with it)."""
    return "\n".join(_block(block) for block in blocks)


def _block(block) -> str:
    if isinstance(block, str):
        return block + "\n"
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_cell(h) for h in block.headers) + " |",
                 "|" + "---|" * len(block.headers)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows]
        return "\n".join(lines) + "\n"
    if isinstance(block, Picture):
        return f"![{block.caption}]({block.name})\n\n*{block.caption}*\n"
    if isinstance(block, Code):
        return f"```{block.language}\n{block.text.rstrip()}\n```\n"
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items) + "\n"
    raise TypeError(f"unknown card block {type(block).__name__}")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
