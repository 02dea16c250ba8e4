"""The card's content as plain data, so the Markdown card and the HTML report say the same.

A section is a title and a list of blocks; each renderer turns the blocks into its own
format. Paragraph text may hold `code` spans, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    sortable: bool = False
    marked: tuple[int, ...] = ()  # rows to highlight (the report's chosen trial)


@dataclass(frozen=True)
class Picture:
    source: Path  # where the picture is now
    name: str  # its file name next to the card
    caption: str


@dataclass(frozen=True)
class Code:
    language: str
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


Block = str | Table | Picture | Code | Bullets


@dataclass(frozen=True)
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    anchor: str = ""
