"""What every run record shares: frozen pydantic models, one reader, one JSON form.

A record is parsed once where it is read; a file that is not JSON or does not match its
model is a `RecordError` (one line naming the file and the first field at fault), never a
KeyError further on. `record_json` is what producers write: the keys in the order the
model declares them, optional blocks left out when absent, as the files always held them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer, model_validator

from ..errors import RecordError

SCHEMA_VERSION = 1  # the version every record written since the schemas were introduced holds
Number = int | float  # a JSON number as written (an int stays an int, so the bytes do not move)
GenomeValues = dict[str, Number | str]  # Genome.model_dump(): 14 values and its genome_rule

R = TypeVar("R", bound="Record")


class Part(BaseModel):
    """A block of a record: frozen, and no key it does not know."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # keys left out of the JSON when their value is None (what a run may not have)
    omitted_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, handler):
        data = handler(self)
        for name in self.omitted_when_none:
            if name in data and data[name] is None:
                del data[name]
        return data


class Record(Part):
    """A file Darwin writes; one that declares `schema_version` (last, so the keys before
    it keep their place) refuses a file of a newer schema than this Darwin knows."""

    file_name: ClassVar[str] = "run record"  # what the file is, in error messages

    @model_validator(mode="after")
    def _known_schema(self):
        version = getattr(self, "schema_version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise ValueError(f"schema_version {version} is newer than this Darwin's "
                             f"({SCHEMA_VERSION}); upgrade darwin-merge to read it")
        return self


def record_json(record: Record) -> dict[str, Any]:
    """The record as the JSON mapping its file holds."""
    return record.model_dump(mode="json", by_alias=True)


def record_text(record: Record, indent: int) -> str:
    """The file's text: `record_json` as indented JSON and a final newline."""
    return json.dumps(record_json(record), indent=indent) + "\n"


def parse_record(model: type[R], data: Any, source: str | Path) -> R:
    """`data` (a file's parsed JSON) as `model`; RecordError naming `source` otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RecordError(f"{source}: not a valid {model.file_name} ({_first_error(exc)})"
                          ) from None


def read_record(model: type[R], path: str | Path) -> R:
    """The record in the file at `path`; RecordError when unreadable, not JSON or not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RecordError(f"{path}: no {model.file_name} there") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"{path}: not readable JSON ({str(exc).splitlines()[0]})") from None
    return parse_record(model, data, path)


def read_optional(model: type[R], path: Path) -> R | None:
    """`read_record` for a file a run may not have: None when it is absent."""
    return read_record(model, path) if path.is_file() else None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "the top level"
    more = f"; {exc.error_count() - 1} more" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg']}{more}"
