"""Two fixes to typer's rich help screens, for the `darwin` command line (cli.py).

* Help texts are plain text. typer's rich help reads every help text as rich markup, so a
  literal in brackets vanishes: `the [lm-eval] extra` showed as `the  extra`,
  `org/name[@revision]` as `org/name`. `PlainHelpGroup`, the class of darwin's root command,
  escapes the markup of every help text of the command tree when typer builds it.
* A flag shows no type. typer 0.29 (installed here; it carries its own copy of click)
  prints every option's type in the rich help, flags included: `--json <bool>`,
  `--thinking --no-thinking <bool>`, even `--help <bool>`, as if a flag took a value
  (`rich_utils` puts `TyperOption.display_type_rich` in the type column for every option).
  typer 0.27 showed none for a flag (its `rich_utils` skipped a metavar naming bool), and
  the plain help still shows none (`TyperOption.get_help_record`). `hide_flag_types`
  restores that; on a typer without `display_type_rich` (0.27 and older) it changes nothing.
"""

from __future__ import annotations

from rich.markup import escape
from typer import core


class PlainHelpGroup(core.TyperGroup):
    """darwin's root command: the help texts of its whole tree show as written."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if getattr(self, "rich_markup_mode", None) == "rich":
            _escape_help(self)


def _escape_help(command) -> None:
    """Escape rich markup in the help texts of `command`, its parameters and subcommands."""
    for attr in ("help", "short_help", "epilog"):
        text = getattr(command, attr, None)
        if isinstance(text, str):
            setattr(command, attr, escape(text))
    for param in command.params:
        if isinstance(getattr(param, "help", None), str):
            param.help = escape(param.help)
    for sub in getattr(command, "commands", {}).values():
        _escape_help(sub)


def hide_flag_types() -> None:
    """A boolean flag shows no type in the rich help (its explicit metavar, if any, stays)."""
    option = getattr(core, "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "hides_flag_types", False):
        return

    def display_type_rich(self, ctx):
        if getattr(self, "is_bool_flag", False) and self.metavar is None:
            return None
        return shown(self, ctx)

    display_type_rich.hides_flag_types = True
    option.display_type_rich = display_type_rich
