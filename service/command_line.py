"""What every `salesbot` command is built with: exit statuses, the one-line failure, the parser that
refuses in one line, and the helpers that add a sub-command. The command modules (cli.py, jobs/commands.py,
events/commands.py) import this; cli.py alone assembles them, so nothing imports back up into it."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any, NoReturn

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandFailed(Exception):
    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, and where to read more), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" after every option that has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_command(group: Any, name: str, help: str, handler: Callable[[argparse.Namespace], int] | None = None) -> Any:
    """A sub-command parser with the shared formatter; `help` is also its description."""
    parser = group.add_parser(name, help=help, description=help, formatter_class=HelpWithDefaults)
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def run_async(command: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    return lambda args: asyncio.run(command(args))


def positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise ValueError(text)
        return value

    parse.__name__ = f"positive {kind.__name__}"  # what argparse names in "invalid ... value"
    return parse
