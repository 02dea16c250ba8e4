"""Every `--help` screen of the command line, walked from typer's command tree (a new
command or subcommand is covered without being named here): flags show no `<bool>` type,
and help texts are plain text (a bracketed literal such as `[lm-eval]` shows)."""

from __future__ import annotations

import re

import pytest

from darwin_merge.cli import app, main

BOX = str.maketrans("", "", "│╭╮╰╯─")


def _tree(command, path=()):
    """(path, command) for the root, every group and every command under it."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _tree(sub, (*path, name))


def _commands():
    import typer.main

    return list(_tree(typer.main.get_command(app)))


def _words(text: str) -> str:
    """Text without the help panels' borders, whitespace collapsed (a wrapped line joins)."""
    return " ".join(text.translate(BOX).split())


@pytest.fixture
def help_of(capsys, monkeypatch):
    """`darwin PATH --help` as printed on a 200-column terminal without colours."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)

    def run(path) -> str:
        capsys.readouterr()
        assert main([*path, "--help"]) == 0
        printed = capsys.readouterr().out
        assert "Usage: darwin" in printed
        return printed
    return run


def test_the_walk_reaches_every_level():
    paths = {path for path, _ in _commands()}
    assert {(), ("eval",), ("evolve",), ("demo",), ("demo", "run"), ("bench",),
            ("bench", "quality")} <= paths


def test_no_help_shows_a_type_for_a_flag(help_of):
    shown = {path: help_of(path) for path, _ in _commands()}
    assert {" ".join(path) or "darwin": text.count("<bool>")
            for path, text in shown.items() if "<bool>" in text} == {}
    # flags are still listed (with their --no- form), only their type column is empty
    assert re.search(r"--thinking\s+--no-thinking\s+enable_thinking", shown[("eval",)])
    assert re.search(r"--help\s+Show this message", shown[()])


def test_bracketed_literals_in_help_texts_show(help_of):
    missing = []
    for path, command in _commands():
        texts = [command.help, *(getattr(p, "help", None) for p in command.params)]
        printed = _words(help_of(path))
        for text in filter(None, texts):
            for literal in re.findall(r"\[[^\]]*\]", text.replace("\\[", "[")):
                if _words(literal) not in printed:
                    missing.append((" ".join(path), literal))
    assert missing == []


def test_eval_help_names_the_lm_eval_extra(help_of):
    assert "the [lm-eval] extra" in _words(help_of(("eval",)))
