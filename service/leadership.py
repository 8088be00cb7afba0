"""Work that runs in one process at a time, across every instance and worker on one database
(DESIGN.md, "Background work").

A `Leadership` is a named lock the operating system or the database lets go of when its holder dies,
so a crashed holder blocks nobody and there is no lease to expire:

- SQLite: an flock on `<database file>.<name>.lock` beside the database (SQLite is one machine's).
  flock belongs to the open file, so two Leaderships in one process exclude each other too.
- PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) held on a connection of its own; when
  that connection is lost (a restart, `pg_terminate_backend`), so is the lock, and `held()` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from service.db import is_unavailable, sqlite_file
from service.logs import event

logger = logging.getLogger("salesbot.leadership")
WAIT_STEP_SECONDS = 0.05  # how often a waiting SQLite holder tries the flock again
_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def advisory_key(name: str) -> int:
    """The 64-bit advisory lock key of a name: the same in every process, unlikely to meet another app's."""
    digest = hashlib.sha256(f"salesbot leadership {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    """A named lock across processes on one database. Use `async with Leadership(url, name) as lead:`
    then `await lead.acquire()`; it is let go on exit, or when the process dies."""

    def __init__(self, database_url: str, name: str) -> None:
        if not name or set(name) - _NAME_CHARACTERS:
            raise ValueError("A leadership name is lower-case letters, digits, '-' and '_'.")
        self.name = name
        self._url = database_url
        self._path = sqlite_file(database_url)
        self._fd: int | None = None  # SQLite: the locked file
        self._connection: Any = None  # PostgreSQL: the asyncpg connection holding the lock

    async def acquire(self, *, wait: bool = False) -> bool:
        """Take the lock if no other process holds it (True when held afterwards); wait=True waits until
        the holder lets go or dies."""
        if await self.held():
            return True
        if self._path is not None:
            return await self._acquire_file(wait)
        return await self._acquire_advisory(wait)

    async def held(self) -> bool:
        """Whether this object holds the lock now (on PostgreSQL: its connection still answers)."""
        if self._path is not None:
            return self._fd is not None
        if self._connection is None:
            return False
        try:
            await self._connection.fetchval("SELECT 1")
        except Exception as error:
            if not (self._connection.is_closed() or is_unavailable(error)):
                raise
            self._forget_connection()
            return False
        return True

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file lets go of its flock
            self._fd = None
        if self._connection is not None:
            with contextlib.suppress(Exception):  # a lost connection has let go already
                await self._connection.close(timeout=2)
            self._forget_connection()

    async def __aenter__(self) -> Leadership:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()

    # --- SQLite ------------------------------------------------------------------------------------

    def _lock_file(self) -> Path:
        assert self._path is not None
        return self._path.with_name(f"{self._path.name}.{self.name}.lock")

    async def _acquire_file(self, wait: bool) -> bool:
        # Beside the database, in its 0700 directory; the database itself exists (the store opened it).
        fd = os.open(self._lock_file(), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if not wait:
                        os.close(fd)
                        return False
                    await asyncio.sleep(WAIT_STEP_SECONDS)  # a blocking flock in a thread could not be cancelled
                    continue
                self._fd = fd
                return True
        except BaseException:
            os.close(fd)
            raise

    # --- PostgreSQL --------------------------------------------------------------------------------

    async def _acquire_advisory(self, wait: bool) -> bool:
        import asyncpg

        from service.vault import asyncpg_dsn

        connection = await asyncpg.connect(
            asyncpg_dsn(self._url), server_settings={"application_name": f"salesbot leader {self.name}"}
        )
        try:
            if wait:
                await connection.execute("SELECT pg_advisory_lock($1)", advisory_key(self.name))
                got = True
            else:
                got = bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", advisory_key(self.name)))
        except BaseException:
            connection.terminate()
            raise
        if not got:
            await connection.close()
            return False
        self._connection = connection
        return True

    def _forget_connection(self) -> None:
        if self._connection is not None and not self._connection.is_closed():
            self._connection.terminate()
        self._connection = None


async def run_periodically(
    database_url: str,
    name: str,
    work: Callable[[], Awaitable[Any]],
    every: float,
    *,
    first_after: float | None = None,
) -> None:
    """Until cancelled: every `every` seconds (the first time after `first_after`, default `every`),
    run `work` if this process holds the named leadership or can take it now. The leadership is
    contended at once, so which process leads is known (and logged) from the start. A failed run (the
    database down, say) is logged by its class only and tried again next time."""
    async with Leadership(database_url, name) as lead:
        leading = await _contend(lead, was_leading=None)
        await asyncio.sleep(every if first_after is None else first_after)
        while True:
            try:
                leading = await _contend(lead, was_leading=leading)
                if leading:
                    await work()
            except Exception as exc:  # the next round tries again; a lost lock is taken again then
                logger.warning("%s failed (%s); next try in %.0f s", name, type(exc).__name__, every)
            await asyncio.sleep(every)


async def _contend(lead: Leadership, *, was_leading: bool | None) -> bool:
    """Take the leadership if free; log the first outcome (taken or standby) and every change."""
    try:
        leading = await lead.acquire()
    except Exception as exc:  # the database is down: nobody can lead on it now; next round tries again
        logger.warning("%s: could not contend (%s)", lead.name, type(exc).__name__)
        leading = False
    if leading != was_leading:
        name = "leadership.taken" if leading else ("leadership.standby" if was_leading is None else "leadership.lost")
        event(logger, name, name=lead.name, pid=os.getpid())
    return leading
