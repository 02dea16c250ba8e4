"""One way to name a model: a local folder, or a Hub id resolved through huggingface_hub.

Every command that takes a model reads the text through `resolve_model`, and every record
stores `str(ref)`: the folder as given, or `org/name@<40-hex commit>` for a Hub model, so a
record names exactly the weights it was made from and reads back offline from the cache.

A text is a Hub id when it is not an existing path, has one slash (before an optional
`@revision`), does not start with `.` or `/`, and its first part is not an existing folder.
It is resolved with `huggingface_hub.snapshot_download` (its cache, `HF_HUB_OFFLINE`, its
token handling), safetensors only unless pickles are allowed; nothing from the repository
is executed (ModelSource's refusals apply to the snapshot folder as to any folder).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, InstanceOf, PlainSerializer

from ..errors import ModelFormatError

HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
# What a merge, scan or evaluation reads from a repository (weights, config, tokenizer).
FILE_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja")
PICKLE_PATTERNS = ("*.bin",)


@dataclass(frozen=True)
class ModelRef:
    """A model as the user named it and where its files lie (`os.PathLike`: the folder)."""

    path: Path
    hub_id: str | None = None  # org/name
    commit: str | None = None  # the 40-hex commit the snapshot is

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return f"{self.hub_id}@{self.commit}" if self.hub_id else str(self.path)

    @property
    def root(self) -> Path:
        """What the model's files may live in: the folder, or for a snapshot of a Hub
        cache (named by id or by path) its repository's folder, models--org--name, whose
        snapshots link to its blobs."""
        snapshots = self.path.parent
        if snapshots.name == "snapshots" and snapshots.parent.name.startswith("models--"):
            return snapshots.parent
        return self.path

    def identity(self) -> str:
        """What a resumed run compares: the Hub id and commit, or the absolute folder."""
        return str(self) if self.hub_id else str(self.path.resolve())

    @property
    def name(self) -> str:
        """A short name: the repository's or the folder's."""
        return self.hub_id.split("/")[-1] if self.hub_id else self.path.name


def hub_id_of(text: str) -> re.Match | None:
    """The Hub-id reading of `text` (repo, revision), or None when it cannot be one."""
    if text.startswith((".", "/")) or Path(text).exists():
        return None
    match = HUB_ID.match(text)
    if match is None or Path(match["repo"].split("/")[0]).is_dir():
        return None
    return match


def is_repo_id(value) -> bool:
    """`org/name` with no revision and no path reading: what a card's `base_model` (and
    `darwin card --father-id`) accepts."""
    match = hub_id_of(value) if isinstance(value, str) else None
    return match is not None and match["revision"] is None


def resolve_model(model: str | os.PathLike, *, allow_pickle: bool = False,
                  cached_only: bool = False) -> ModelRef:
    """The local folder of `model`: itself when it exists, else the cached (or, online and
    not `cached_only`, downloaded) snapshot of a Hub id; a miss names both readings in one
    line."""
    if isinstance(model, ModelRef):
        return model
    text = os.fspath(model)
    match = hub_id_of(text)
    if match is None:
        return ModelRef(Path(text))
    repo, revision = match["repo"], match["revision"] or "main"
    folder = _snapshot(text, repo, revision, allow_pickle, cached_only)
    return ModelRef(folder, hub_id=repo, commit=folder.name if COMMIT.match(folder.name)
                    else None)


def _offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return constants.HF_HUB_OFFLINE or value in ("1", "true", "yes", "on")


def _snapshot(text: str, repo: str, revision: str, allow_pickle: bool,
              cached_only: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = cached_only or _offline()
    patterns = list(FILE_PATTERNS) + (list(PICKLE_PATTERNS) if allow_pickle else [])
    try:
        folder = snapshot_download(repo, revision=revision, allow_patterns=patterns,
                                   cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                   local_files_only=offline)
    except LocalEntryNotFoundError as exc:
        where = "offline (HF_HUB_OFFLINE)" if offline else "and the Hub cannot be reached"
        raise ModelFormatError(f"no folder {text}, and no cached Hub model {text} ({where})"
                               ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(f"no folder {text}, and the Hub model {text} cannot be "
                               f"fetched: {first}") from exc
    return Path(folder)



# A pydantic field type for a model reference: validated by `resolve_model` (a Hub id
# resolves then), written back as `str(ref)`.
def _model_value(value) -> ModelRef:
    """A recipe's model value: text (a folder or a Hub id), resolved; anything else is a
    ValueError (pydantic's one-line error)."""
    if not isinstance(value, str | os.PathLike):
        raise ValueError("a model is a folder or a Hub id (text)")
    return resolve_model(value)


ModelField = Annotated[InstanceOf[ModelRef], BeforeValidator(_model_value),
                       PlainSerializer(str, return_type=str)]
