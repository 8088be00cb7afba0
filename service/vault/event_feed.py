"""Hearing of new events as they commit, in any process: `store.events()` and the webhook worker
(DESIGN.md, "The event log").

- PostgreSQL: a connection of its own LISTENs on `salesbot_events` (revision 0008's trigger notifies
  at commit). A lost connection is replaced, and the follower looks again, so nothing is missed: what
  it reads is always "events after the last seq I saw".
- SQLite: `PRAGMA data_version` on a connection of its own changes when any other connection commits
  (another process, or this one's writer); it is one cheap call, asked every few milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from service.db import BUSY_TIMEOUT_MS, sqlite_file

if TYPE_CHECKING:
    from service.vault.event_log import EventLog, Filters, LoggedEvent

CHANNEL = "salesbot_events"
SQLITE_POLL_SECONDS = 0.005  # how often data_version is asked: a bot hears within milliseconds
# A listener also looks every so often without being told: the belt to LISTEN's braces.
LOOK_ANYWAY_SECONDS = 5.0


class Wakeups:
    """`await wakeups.wait(within)` returns when something may have been committed since the last call,
    or after `within` seconds at most. Use as an async context manager."""

    def __init__(self, database_url: str, *, poll: float = SQLITE_POLL_SECONDS) -> None:
        self._url = database_url
        self._path = sqlite_file(database_url)
        self._poll = poll
        self._sqlite: sqlite3.Connection | None = None
        self._version = 0
        self._listener: Any = None  # PostgreSQL: the asyncpg connection
        self._heard = asyncio.Event()

    async def __aenter__(self) -> Wakeups:
        if self._path is not None:
            self._sqlite = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            self._sqlite.execute("PRAGMA query_only=ON")
            self._version = self._data_version()
        else:
            await self._listen()
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
            self._listener = None

    async def wait(self, within: float = LOOK_ANYWAY_SECONDS) -> None:
        if self._sqlite is not None:
            await self._wait_sqlite(within)
        else:
            await self._wait_postgres(within)

    # --- SQLite ------------------------------------------------------------------------------------

    def _data_version(self) -> int:
        assert self._sqlite is not None
        return int(self._sqlite.execute("PRAGMA data_version").fetchone()[0])

    async def _wait_sqlite(self, within: float) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            version = self._data_version()
            if version != self._version:
                self._version = version
                return
            await asyncio.sleep(self._poll)

    # --- PostgreSQL --------------------------------------------------------------------------------

    async def _listen(self) -> None:
        import asyncpg

        from service.vault.postgres import asyncpg_dsn

        connection = await asyncpg.connect(
            asyncpg_dsn(self._url), server_settings={"application_name": "salesbot events listener"}
        )
        await connection.add_listener(CHANNEL, self._notified)
        connection.add_termination_listener(self._lost)
        self._listener = connection

    def _notified(self, *_args: Any) -> None:
        self._heard.set()

    def _lost(self, _connection: Any) -> None:
        self._listener = None
        self._heard.set()  # look now: what was notified while it was down is read all the same

    async def _wait_postgres(self, within: float) -> None:
        if self._listener is None or self._listener.is_closed():
            self._listener = None
            try:
                await self._listen()
            except Exception:  # the database is down: try again at the next wait
                await asyncio.sleep(min(within, 1.0))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._heard.wait(), within)
        self._heard.clear()


async def follow(
    log: EventLog, wakeups: Wakeups, filters: Filters, *, after: int, page: int = 500
) -> AsyncIterator[LoggedEvent]:
    """Every event after seq `after` that matches, in commit order, then each new one as it commits."""
    while True:
        batch = await log.list(filters, after=after, limit=page)
        for event in batch:
            after = event.seq
            yield event
        if len(batch) < page:
            await wakeups.wait()
