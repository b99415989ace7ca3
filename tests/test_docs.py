"""Docs the tests enforce: every CLI command has help text and is documented (sqlite-utils' habit)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from flows.cli import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def _commands(group, prefix: str = "") -> list[tuple[str, object]]:
    """Every visible command of the CLI as ("profile show", command), groups included."""
    out = []
    for name, cmd in sorted(group.commands.items()):
        if cmd.hidden:
            continue
        out.append((f"{prefix}{name}", cmd))
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click: no isinstance)
            out += _commands(cmd, f"{prefix}{name} ")
    return out


COMMANDS = _commands(typer.main.get_command(app))


def test_the_cli_has_commands():
    names = [n for n, _ in COMMANDS]
    assert {"tune", "serve", "best", "bench", "probe", "profile", "profile show"} <= set(names), names


@pytest.mark.parametrize("name, cmd", COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_has_help_and_is_documented(name, cmd):
    assert (cmd.help or "").strip(), f"`xlstm-autotune {name}` has no help text"
    words = name.split()
    # documented as `xlstm-autotune NAME ...`, or a group's subcommand in its usage line (`profile path | show`)
    documented = f"xlstm-autotune {name}" in DOCS or (
        len(words) == 2 and re.search(rf"xlstm-autotune {words[0]}\b[^\n]*\b{words[1]}\b", DOCS))
    assert documented, f"`xlstm-autotune {name}` appears in neither README.md nor docs/*.md"
    for param in cmd.params:
        if param.param_type_name == "option" and not param.hidden and param.name != "help":
            assert (param.help or "").strip(), f"`xlstm-autotune {name}` option {param.opts} has no help text"
