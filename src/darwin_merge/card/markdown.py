"""README.md: the model card a hub shows, with YAML front matter that hubs read."""

from __future__ import annotations

import yaml

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
    """The hub metadata: licence, parents, tags, task, and the holdout results."""
    meta: dict = {}
    license_ = card_license(rec)
    if license_:
        meta["license"] = license_
    parents = [p.hub_id or p.source for p in rec.parents if p.role in ("father", "mother")]
    if parents:
        meta["base_model"] = parents
        meta["base_model_relation"] = "merge"
    meta.update(tags=list(TAGS), pipeline_tag="text-generation", library_name="transformers")
    index = model_index(rec)
    if index:
        meta["model-index"] = index
    return meta


def model_index(rec: RunRecords) -> list[dict]:
    """The child's holdout scores in the hub's model-index layout (empty when none)."""
    holdout = rec.summary.get("holdout") or {}
    child = (holdout.get("models") or {}).get("child") or {}
    results = []
    for task, spec in (holdout.get("tasks") or {}).items():
        spec = spec or {}
        metric = spec.get("metric") or "acc"
        value = (child.get(task) or {}).get(metric)
        if value is None:
            continue
        dataset = {"name": task, "type": task, "split": "holdout"}
        if spec.get("shots") is not None:
            dataset["args"] = {"num_few_shot": spec["shots"]}
        results.append({"task": {"type": "text-generation", "name": "Text Generation"},
                        "dataset": dataset,
                        "metrics": [{"type": metric, "value": float(value),
                                     "name": f"{metric} ({spec['n']} items)" if spec.get("n")
                                     else metric}]})
    return [{"name": rec.name, "results": results}] if results else []


def render_markdown(meta: dict, sections: list[Section]) -> str:
    """Front matter, then the sections (the first one is the title)."""
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    parts = [f"---\n{head}---\n"]
    for i, section in enumerate(sections):
        parts.append(f"{'#' if i == 0 else '##'} {section.title}\n")
        parts += [_block(block) for block in section.blocks]
    return "\n".join(parts).rstrip() + "\n"


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
