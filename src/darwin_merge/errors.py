"""Errors a user can cause, each with its own exit code.

The CLI turns a `DarwinError` into one line on stderr and its exit code; anything
else is a bug and keeps its traceback. Codes are documented in docs/RELIABILITY.md.
"""

from __future__ import annotations


class DarwinError(Exception):
    """Base class: a clear, one-line message for a user mistake or bad input."""

    exit_code = 1


class UsageError(DarwinError):
    """Bad options or values on the command line or in a recipe/genome file."""

    exit_code = 2


class RecordError(UsageError):
    """A run record (darwin_merge.json, scan.json, summary.json, ...) is not readable JSON
    or does not match its schema (records/); the exit code of a UsageError."""


class ModelFormatError(DarwinError):
    """A model folder or file is missing, corrupt, unsafe or of an unsupported kind."""

    exit_code = 3


class IncompatibleModelsError(DarwinError):
    """Father, mother (and base) cannot be merged: names, shapes or dtypes differ."""

    exit_code = 4


class NumericalError(DarwinError):
    """NaN or Inf in an input or an output tensor."""

    exit_code = 5


class OutputError(DarwinError):
    """The output cannot be written: it exists, the disk is full, another writer holds it."""

    exit_code = 6


class StorageError(DarwinError):
    """The search's study storage cannot be reached or does not match this search."""

    exit_code = 7


class ResourceError(DarwinError):
    """The work would not fit in the memory or disk available."""

    exit_code = 8


class SearchError(DarwinError):
    """The search ended without a child to keep: no candidate scored, or none healthy."""

    exit_code = 9


def validation_line(exc, what: str) -> str:
    """`field.sub: message` of a pydantic ValidationError's first error, in one line (`what`
    names the value when the error has no field; a key with a newline is quoted)."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or what
    if not where.isprintable():  # a YAML key with a newline must not break the line
        where = repr(where)
    return f"{where}: {error['msg']}"
