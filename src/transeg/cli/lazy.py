"""A click group that imports each command's module only when that command is used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import click


class LazyCommand(NamedTuple):
    """Where a command is defined, and the first paragraph of its help, which ``--help`` of the group
    lists so that it imports no command module."""

    target: str  # "module:attribute"
    summary: str


class LazyGroup(click.Group):
    """A group of ``lazy_commands``: running a command, or showing its help, imports its module alone."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            module_name, attribute = self.lazy_commands[cmd_name].target.split(":")
            self.add_command(getattr(importlib.import_module(module_name), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list, as click writes it, from the summaries of the commands not yet imported."""
        listed = {name: self.commands[name] if name in self.commands
                  else click.Command(name, help=self.lazy_commands[name].summary)
                  for name in self.list_commands(ctx)}
        if not listed:
            return
        limit = formatter.width - 6 - max(map(len, listed))
        with formatter.section("Commands"):
            formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in listed.items()])
