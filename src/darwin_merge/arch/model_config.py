"""Reading a model's config.json: a multimodal model (Gemma 3 and 4 with their vision
towers) keeps its language model's sizes in a `text_config` sub-config, a text-only model
at the top level. Every read of those sizes goes through here."""

from __future__ import annotations


def text_config(config: dict) -> dict:
    """The part of a config that describes the language model: its `text_config` when it
    has one, else the config itself."""
    sub = config.get("text_config")
    return sub if isinstance(sub, dict) else config


def declared_size(config: dict, *keys: str) -> int | None:
    """The first positive integer a config declares under `keys` (in their order), at its
    top level first, then in its text sub-config; None when it declares none."""
    for cfg in (config, text_config(config)):
        for key in keys:
            value = cfg.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None
