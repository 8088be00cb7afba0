"""What reaches a log line or a terminal is printable: control characters a client or a provider sent are
written as escapes (`\\x1b`, `\\x0a`), so they cannot start a forged log line or drive an operator's terminal.

One place per channel: `escape_logs()` for everything logged (a log record factory, so every logger and
handler, uvicorn's included, gets escaped text), and `say()` for every human-readable line the command
line prints. What a script reads as data (`tokens get`'s value, `--json`, which escapes by itself) is
printed as it is.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidirectional overrides
# and isolates (which reorder what a terminal shows).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control character written as an escape; a text without any comes back as it is."""
    return _UNPRINTABLE.sub(_escape, text)


def say(*lines: str, file: TextIO | None = None) -> None:
    """Print each line for a person to read, made printable (a line holding a newline shows it as \\x0a)."""
    out = file if file is not None else sys.stdout
    for line in lines:
        print(printable(line), file=out)


def _printable_arg(arg: Any) -> Any:
    return printable(arg) if isinstance(arg, str) else arg


class _Printable(logging.LogRecord):
    """A record whose message is made printable after formatting, whatever its arguments were (objects too)."""

    def getMessage(self) -> str:
        return printable(super().getMessage())


def escape_logs() -> None:
    """Make every log record printable from now on (idempotent): its message as formatted, and its string
    arguments too (some formatters, uvicorn's access log, read those directly). It wraps the record factory
    already set, so another one (request ids, say) keeps working beneath it."""
    inner = logging.getLogRecordFactory()
    if getattr(inner, "escapes_control_characters", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = inner(*args, **kwargs)
        if type(record) is logging.LogRecord:
            record.__class__ = _Printable
        else:  # a factory of someone else's made it: escape what it will format from
            record.msg = _printable_arg(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_printable_arg(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: _printable_arg(value) for key, value in record.args.items()}
        return record

    escaping: Callable[..., logging.LogRecord] = factory
    escaping.escapes_control_characters = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(escaping)
