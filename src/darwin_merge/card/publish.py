"""Publishing a child to the Hub: what can be checked offline first, then one upload.

`upload_plan` refuses, before anything leaves the machine, a child the Hub would show
wrongly: no weights or config, no model card (`darwin card` writes it), a card whose
metadata does not parse as huggingface_hub's `ModelCardData`, a `base_model` that is not
`org/name` (a local path), a `model-index` that does not survive huggingface_hub's own
round trip. `push` then creates the repository (if needed) and uploads exactly the
planned files with `HfApi.upload_folder` (its token handling).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..io import ModelSource
from ..io.model_ref import is_repo_id
from ..records import file_names
from .records import readme_front_matter


@dataclass(frozen=True)
class UploadPlan:
    """The child folder, the repository and the files (names inside the folder) to send."""

    folder: Path
    repo_id: str
    files: tuple[str, ...]


def upload_plan(child: str | Path, repo_id: str) -> UploadPlan:
    """Check the child and its card offline and list what an upload sends: every file
    at the top of the child folder (weights, config, tokenizer, README.md, pictures,
    darwin_merge.json), hidden files and sub-folders left out."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise UsageError(f"{repo_id!r} is not a Hub repository id (org/name)") from exc
    if repo_id.count("/") != 1:
        raise UsageError(f"{repo_id!r}: name the repository as org/name")
    with ModelSource(child) as source:  # weights and config readable, no pickle
        folder = source.path
    check_card(folder / file_names.CARD)
    files = tuple(sorted(p.name for p in folder.iterdir()
                         if p.is_file() and not p.name.startswith(".")))
    return UploadPlan(folder, repo_id, files)


def check_card(path: Path) -> None:
    """The card's metadata as the Hub reads it: parsed by ModelCardData, `base_model` of
    Hub ids only, the model-index unchanged by a round trip through huggingface_hub."""
    from huggingface_hub import ModelCard

    if not path.is_file():
        raise UsageError(f"{path.parent}: no model card (README.md); write it with "
                         f"`darwin card {path.parent}` first")
    try:
        card = ModelCard.load(path)
        front = card.data.to_dict()
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{path}: the card's metadata does not parse ({exc})") from exc
    bases = front.get("base_model") or []
    for base in [bases] if isinstance(bases, str) else bases:
        if not is_repo_id(base):
            raise UsageError(f"{path}: base_model {base!r} is not a Hub id (org/name); give "
                             "the parents' Hub ids (`darwin card --father-id/--mother-id`)")
    written = readme_front_matter(path).get("model-index")
    if written is not None and front.get("model-index") != written:
        raise UsageError(f"{path}: the card's model-index changes when huggingface_hub "
                         "reads it back; fix the card's results metadata")


def push(plan: UploadPlan, *, private: bool = False,
         commit_message: str = "Upload a Darwin merge") -> str:
    """Create the repository if needed and upload the planned files; the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(plan.repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(plan.folder), repo_id=plan.repo_id,
                             repo_type="model", allow_patterns=list(plan.files),
                             commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
