"""Everything the card and the report say, read from the run's own files.

The card must never be out of step with the weights, so it is written only from
records: the child's darwin_merge.json and config.json, and (when given) the run
folder's summary.json, trials.json, scan/ and health/, each parsed into its record
(records/): a file that does not match its schema is a RecordError. Every file and
(nearly) every key is optional; what is missing simply leaves its section out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from ..arch.model_config import text_config
from ..errors import DarwinError, UsageError
from ..io.model_ref import hub_id_of, is_repo_id, resolve_model
from ..records import (
    Best,
    HealthRecord,
    HealthVerdict,
    Holdout,
    MergeOptions,
    MergeRecord,
    SummaryRecord,
    TrialRow,
    Trials,
    file_names,
    read_optional,
)

# Pictures a run may hold, by role: (path inside the run folder, name next to the card).
RUN_PICTURES = {
    "mds": (f"{file_names.SCAN_DIR}/{file_names.MDS_PICTURE}", file_names.MDS_PICTURE),
    "mri_ratio": (f"{file_names.SCAN_DIR}/{file_names.MRI_PICTURE}", file_names.MRI_PICTURE),
    "health": (f"{file_names.HEALTH_DIR}/{file_names.HEALTH_PICTURE}",
               file_names.HEALTH_PICTURE),
    "evolution": (file_names.EVOLUTION_PICTURE, file_names.EVOLUTION_PICTURE),
}


@dataclass(frozen=True)
class ParentInfo:
    """One parent as the card shows it: role, where it came from, what it is."""

    role: str
    source: str
    architecture: str | None = None
    model_type: str | None = None
    num_layers: int | None = None
    license: str | None = None
    hub_id: str | None = None


@dataclass(frozen=True)
class RunRecords:
    """The parsed records of one child (and optionally its run); None means absent."""

    child_dir: Path
    run_dir: Path | None
    child_config: dict
    merge: MergeRecord | None = None
    summary: SummaryRecord | None = None  # None without a run folder
    trials: tuple[TrialRow, ...] = ()
    health: HealthRecord | HealthVerdict | None = None
    parents: tuple[ParentInfo, ...] = ()
    pictures: dict[str, Path] = field(default_factory=dict)
    has_chat_template: bool = False

    @property
    def folder_name(self) -> str:
        return self.child_dir.resolve().name

    @property
    def name(self) -> str:
        """The model's name: its folder's, or the run's when the folder is the run's `child`."""
        if self.folder_name == "child" and self.run_dir is not None:
            return self.run_dir.resolve().name
        return self.folder_name

    @property
    def best(self) -> Best:
        """The summary's best trial (empty without a run)."""
        return self.summary.best if self.summary else Best()

    @property
    def holdout(self) -> Holdout:
        """The summary's holdout table (empty without one)."""
        return self.summary.holdout if self.summary else Holdout()

    @property
    def options(self) -> MergeOptions:
        """The merge's options (all absent without darwin_merge.json)."""
        return self.merge.options if self.merge else MergeOptions()

    @property
    def genome(self) -> dict:
        """The child's genome: darwin_merge.json first (it made these weights)."""
        if self.merge and self.merge.genome:
            return self.merge.genome
        return self.best.genome or {}

    @property
    def genome_hash(self) -> str | None:
        if self.merge and self.merge.genome_hash:
            return self.merge.genome_hash
        return self.best.genome_hash

    @property
    def num_layers(self) -> int | None:
        return text_config(self.child_config).get("num_hidden_layers")


def read_json(path: Path) -> dict | list | None:
    """A JSON file's content, or None when it is absent; a broken file is a UsageError."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not readable JSON ({str(exc).splitlines()[0]})") from exc


def read_records(child_dir: str | Path, run_dir: str | Path | None = None,
                 hub_ids: dict[str, str] | None = None) -> RunRecords:
    """Gather the child's and the run's records (tolerant of every missing file).

    `hub_ids` ({"father": "org/name", ...}) names parents on the Hub where their folders
    do not (`darwin card --father-id/--mother-id`).
    """
    for role, hub_id in (hub_ids or {}).items():
        if not is_repo_id(hub_id):
            raise UsageError(f"--{role}-id {hub_id!r} is not a Hub model id (org/name)")
    child_dir = Path(child_dir)
    if not child_dir.is_dir():
        raise UsageError(f"{child_dir}: the child folder does not exist")
    config = read_json(child_dir / "config.json")
    if not isinstance(config, dict):
        raise UsageError(f"{child_dir}: not a model folder (no config.json)")
    run = Path(run_dir) if run_dir is not None else None
    if run is not None and not run.is_dir():
        raise UsageError(f"{run}: the run folder does not exist")
    merge = read_optional(MergeRecord, child_dir / file_names.MERGE_RECORD)
    if merge is not None and merge.parent_genes is not None:
        raise UsageError(f"{child_dir}: a child of {len(merge.parent_genes)} parents; the card "
                         "does not describe N parents yet (its darwin_merge.json does)")
    summary = read_optional(SummaryRecord, run / file_names.SUMMARY) if run else None
    trials = read_optional(Trials, run / file_names.TRIALS) if run else None
    return RunRecords(
        child_dir=child_dir, run_dir=run, child_config=config, merge=merge, summary=summary,
        trials=tuple(trials.root) if trials else (),
        health=_health(run, summary),
        parents=_parents(merge, summary, run, hub_ids or {}),
        pictures={**_scan_pictures(merge), **_pictures(run, summary)},
        has_chat_template=_has_chat_template(child_dir),
    )


def _mapping(data) -> dict:
    return data if isinstance(data, dict) else {}


def _health(run: Path | None, summary: SummaryRecord | None
            ) -> HealthRecord | HealthVerdict | None:
    """health/health.json (the full record) over the summary's copy of it."""
    path = run / file_names.HEALTH_DIR / file_names.HEALTH if run else None
    record = read_optional(HealthRecord, path) if path else None
    return record or (summary.health if summary else None)


def _pictures(run: Path | None, summary: SummaryRecord | None) -> dict[str, Path]:
    if run is None:
        return {}
    found = {role: run / rel for role, (rel, _) in RUN_PICTURES.items() if (run / rel).is_file()}
    if summary is not None and summary.scan is not None:  # it may live elsewhere than scan/
        scan_dir = (run / summary.scan).parent
        for role, (rel, _) in RUN_PICTURES.items():
            candidate = scan_dir / Path(rel).name
            if role in ("mds", "mri_ratio") and role not in found and candidate.is_file():
                found[role] = candidate
    return found


def _scan_pictures(merge: MergeRecord | None) -> dict[str, Path]:
    """The pictures beside the scan file the merge used, if still there (the run's own
    pictures, when there is a run, take precedence)."""
    scan = merge.options.scan if merge else None
    if not scan:
        return {}
    folder = Path(scan) if Path(scan).is_dir() else Path(scan).parent
    found = {}
    for role in ("mds", "mri_ratio"):
        candidate = folder / Path(RUN_PICTURES[role][0]).name
        if candidate.is_file():
            found[role] = candidate
    return found


def _parents(merge: MergeRecord | None, summary: SummaryRecord | None, run: Path | None,
             hub_ids: dict[str, str]) -> tuple[ParentInfo, ...]:
    parents = []
    for role in ("father", "mother", "base"):
        source = (getattr(merge.parents, role) if merge else None) or (
            getattr(summary, role) if summary else None)
        if source:
            info = _parent_info(role, str(source), run)
            given = hub_ids.get(role)
            parents.append(info if given is None else replace(info, hub_id=given))
    return tuple(parents)


def _parent_info(role: str, source: str, run: Path | None) -> ParentInfo:
    """Architecture and licence from the parent's folder when it is still on this disk (a
    Hub model's: its cached snapshot; the Hub id is then the record's)."""
    hub = hub_id_of(source)
    folder = _cached_folder(source) if hub else Path(source)
    if not folder.is_absolute() and run is not None and not folder.exists():
        folder = run / folder
    config = _mapping(read_json(folder / "config.json")) if folder.is_dir() else {}
    text = text_config(config)
    name_or_path = hub["repo"] if hub else config.get("_name_or_path")
    return ParentInfo(
        role=role, source=source,
        architecture=", ".join(config.get("architectures") or []) or None,
        model_type=config.get("model_type"),
        num_layers=text.get("num_hidden_layers") if isinstance(text, dict) else None,
        license=_license(folder, config) if folder.is_dir() else None,
        hub_id=name_or_path if is_repo_id(name_or_path) else None,
    )


def _cached_folder(source: str) -> Path:
    """A Hub model's snapshot in the local cache (never downloaded for a card), or a path
    that is not there."""
    try:
        return resolve_model(source, cached_only=True).path
    except DarwinError:
        return Path(source)


def _license(folder: Path, config: dict) -> str | None:
    """The licence a parent declares: its README front matter, else its config."""
    front = readme_front_matter(folder / file_names.CARD)
    value = front.get("license") or config.get("license")
    return str(value) if value else None


def readme_front_matter(path: Path) -> dict:
    """The YAML block between the leading `---` lines of a model card, or {}."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        return _mapping(yaml.safe_load(text[3:end]))
    except yaml.YAMLError:
        return {}


def _has_chat_template(child_dir: Path) -> bool:
    if (child_dir / "chat_template.jinja").is_file():
        return True
    tok = _mapping(read_json(child_dir / "tokenizer_config.json"))
    return bool(tok.get("chat_template"))
