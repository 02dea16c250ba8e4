"""A model folder's token vocabulary (tokenizer.json), read and extended as data.

Only the fast tokenizer's JSON file is read (never code, never a pickle). Writing adds
tokens to a copy of a parent's tokenizer.json (and tokenizer_config.json's table of added
tokens), at the ids the child's embedding rows give them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelFormatError

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
_ADDED_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")


@dataclass(frozen=True)
class Vocabulary:
    """Token string -> id, and the added-token entries of tokenizer.json by content."""

    tokens: dict[str, int]
    added: dict[str, dict] = field(default_factory=dict)


def read_vocabulary(folder: str | Path) -> Vocabulary | None:
    """The vocabulary in FOLDER/tokenizer.json, or None when the folder has none."""
    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        tokens = Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)
        added = json.loads(path.read_text(encoding="utf-8")).get("added_tokens") or []
    except Exception as exc:  # the tokenizers library raises its own exception types
        raise ModelFormatError(f"{path}: cannot read the tokenizer ({exc})") from exc
    return Vocabulary(dict(tokens), {e["content"]: e for e in added if "content" in e})


def added_token_entry(content: str, token_id: int, like: dict | None) -> dict:
    """A tokenizer.json added-token entry, flags copied from the parent's entry if any."""
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": True,
             "special": False}
    flags.update({k: like[k] for k in _ADDED_FLAGS if like and k in like})
    return {"id": token_id, "content": content, **flags}


def add_tokens(folder: Path, entries: list[dict]) -> None:
    """Add tokens (tokenizer.json added-token entries) to the tokenizer files in FOLDER."""
    path = folder / TOKENIZER_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    data["added_tokens"] = sorted((data.get("added_tokens") or []) + entries,
                                  key=lambda e: e["id"])
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    config_path = folder / TOKENIZER_CONFIG
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(config.get("added_tokens_decoder"), dict):
        for entry in entries:
            config["added_tokens_decoder"][str(entry["id"])] = {
                k: v for k, v in entry.items() if k != "id"}
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n",
                               encoding="utf-8")
