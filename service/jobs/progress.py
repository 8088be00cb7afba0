"""Progress for long jobs: a tqdm bar on a terminal, plain periodic lines otherwise (logs, CI, pipes).

Everything goes to stderr (or the stream given), so stdout stays for what a script may parse. The
first update is always printed in plain mode, then at most one line per `interval` seconds, so a
watcher (or a test) learns early that the job is under way without flooding a log file.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        stream: TextIO | None = None,
        interval: float = 2.0,
        tty: bool | None = None,
        unit: str = "rows",
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.unit = unit
        self._last_line: float | None = None
        self._bar: Any = None
        if tty is None:
            tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit=f" {unit}", file=self.stream, dynamic_ncols=True)

    def update(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if self._last_line is None or now - self._last_line >= self.interval:
            self._last_line = now
            self._line()

    def _line(self) -> None:
        if self.total:
            share = f" ({100 * self.done / self.total:.1f}%)"
            print(f"{self.label}: {self.done:,}/{self.total:,} {self.unit}{share}", file=self.stream, flush=True)
        else:
            print(f"{self.label}: {self.done:,} {self.unit}", file=self.stream, flush=True)

    def finish(self, summary: str) -> None:
        """Close the bar and print the one-line summary."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        print(f"{self.label}: {summary}", file=self.stream, flush=True)


class Silent(Progress):
    """For callers (tests, scripts) that want no output at all."""

    def __init__(self, label: str = "", total: int | None = None, **_: Any) -> None:
        self.label, self.total, self.done = label, total, 0
        self._bar = None

    def update(self, count: int) -> None:
        self.done += count

    def finish(self, summary: str) -> None:
        del summary
