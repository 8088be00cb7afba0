"""Keeping the token cache fresh: the change log (revision 0004), polled and applied.

Triggers on `tokens` bump `token_version.version` and log (seq, key) for every change to a key or
value, in the changing transaction, whoever makes it. A ChangeFeed remembers the version it has
applied (`seen`) and, to catch up, asks for the keys logged since, then drops them from the cache.

Freshness, as the store promises it:
- This process's writes through `TokenStore.write_transaction()` (every store write, and the jobs
  and routes that write through it) read the log inside their own transaction and apply it after
  the commit, before the call returns: the next read here is fresh, always.
- A commit through the same engine outside write_transaction() (say `engine.begin()`) marks the feed
  dirty when its connection goes back to the pool; the next read then waits for one poll.
- Other processes and instances: a cache hit is served only while the last completed poll *started*
  less than `stale_after` (1 s) ago; past `refresh_after` (0.25 s) a read starts a poll in the
  background without waiting for it. A change committed elsewhere is therefore never served stale
  more than `stale_after` after its commit, and in a busy process seldom more than `refresh_after`.
  A poll is one single-row query while nothing changed. A failed poll is not fresh: reads wait for
  (and fail with) the next one rather than serve values of unknown age.
- Other processes on the same SQLite file, strictly: every write_transaction() that changed tokens
  writes a new random value into a small shared memory-mapped file beside the database
  (`tokens.db-changed`, a ChangeSignal) after its commit and before it returns. A cache hit first
  compares that value (a memory read, no system call) with the one current at our last poll; if it
  moved, the read polls before answering. So a token revoked by another process's request is never
  handed out here once that request has returned. (Writers outside the store, such as the sqlite3
  prompt, do not signal: for them the 1 s bound holds. PostgreSQL instances may share no disk: 1 s.)
"""

from __future__ import annotations

import asyncio
import fcntl
import math
import mmap
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.cache import TokenCache
from service.models import TokenChange, TokenVersion

VERSION = TokenVersion.__table__
CHANGES = TokenChange.__table__
STALE_AFTER_SECONDS = 1.0
REFRESH_AFTER_SECONDS = 0.25
# Further behind than this, dropping the whole cache is cheaper than reading which keys changed.
# (Revision 0004 keeps 10,000 log rows, so a gap this size is always still in the log.)
FULL_FLUSH_AFTER = 1_000
# Execution option on write_transaction() connections: their commits are applied by the store itself.
APPLIED_OPTION = "salesbot_changes_applied"
_COMMITTED = "salesbot_committed"


class ChangeSignal:
    """Eight shared bytes beside a SQLite database that every writer sets to a fresh random value.

    Random rather than a counter: two processes incrementing at once could both write the same
    number, and a reader would miss the second change; two random values collide once in 2**64."""

    SIZE = 8

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < self.SIZE:
            os.ftruncate(self._fd, self.SIZE)
        self._map = mmap.mmap(self._fd, self.SIZE)

    def value(self) -> bytes:
        return self._map[: self.SIZE]

    def bump(self, expected: bytes | None) -> bytes | None:
        """Write a fresh value; return it when the old one was still `expected`, else None.

        Writers take a file lock around this check-and-write (readers never lock): if nobody bumped
        since the writer read the change log in its transaction, that log read covered every commit
        announced so far, and the writer's own readers may take the new value as seen."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            unchanged = self.value() == expected
            fresh = os.urandom(self.SIZE)
            self._map[: self.SIZE] = fresh
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return fresh if unchanged else None

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


@dataclass(frozen=True)
class Changes:
    version: int
    keys: frozenset[str] | None  # None: anything may have changed, drop everything
    started: float  # monotonic time before the version was read: the view is at least this fresh
    signal: bytes | None = None  # the ChangeSignal's value before the version was read


class ChangeFeed:
    def __init__(
        self,
        engine: AsyncEngine,
        cache: TokenCache,
        *,
        stale_after: float = STALE_AFTER_SECONDS,
        refresh_after: float = REFRESH_AFTER_SECONDS,
        signal: ChangeSignal | None = None,
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.signal = signal
        self.signal_seen: bytes | None = None
        self.stale_after = stale_after
        self.refresh_after = min(refresh_after, stale_after)
        self.seen: int | None = None
        self.synced_at = -math.inf  # start of the newest applied poll
        self.dirty_at = -math.inf  # last commit this feed did not apply itself
        self.polls = 0
        self._poll: asyncio.Task[None] | None = None
        self._watch_commits()

    # --- the read path ---------------------------------------------------------------------------

    def fresh(self) -> bool:
        """May the cache answer now? Starts a background poll when one is due. Never waits."""
        synced_at = self.synced_at
        if synced_at <= self.dirty_at:
            return False
        if self.signal is not None and self.signal.value() != self.signal_seen:
            return False  # a writer on this machine committed since our last poll
        age = time.monotonic() - synced_at
        if age < self.refresh_after:
            return True
        if age < self.stale_after:
            self._start_poll()
            return True
        return False

    async def sync(self) -> None:
        """Wait until the cache reflects every commit made before this call (one poll, shared)."""
        requested = time.monotonic()
        while True:
            task = self._start_poll()
            await asyncio.shield(task)
            if self.synced_at >= requested:
                return
            # The poll we joined began before we asked: wait for one of our own.

    def _start_poll(self) -> asyncio.Task[None]:
        if self._poll is None or self._poll.done():
            self._poll = asyncio.create_task(self._run_poll())
            self._poll.add_done_callback(_retrieve)
        return self._poll

    async def _run_poll(self) -> None:
        async with self.engine.connect() as connection:
            changes = await self.read(connection)
        self.polls += 1
        self.apply(changes)

    # --- shared by polls and write transactions --------------------------------------------------

    async def lock(self, connection: AsyncConnection) -> None:
        """PostgreSQL: take the counter row first, so writers that touch several tokens queue on one
        lock in one order (no deadlock) and `seq` order is commit order."""
        if connection.dialect.name == "postgresql":
            await connection.execute(select(VERSION.c.version).where(VERSION.c.id == 1).with_for_update())

    async def read(self, connection: AsyncConnection) -> Changes:
        return await connection.run_sync(self.read_sync)

    def read_sync(self, connection: Connection) -> Changes:
        """What changed since the last poll, read in the caller's transaction (any thread)."""
        signal = None if self.signal is None else self.signal.value()
        started = time.monotonic()
        seen = self.seen
        version = (connection.execute(select(VERSION.c.version).where(VERSION.c.id == 1))).scalar_one()
        if seen is not None and version == seen:
            return Changes(version, frozenset(), started, signal)
        if seen is None or version < seen or version - seen > FULL_FLUSH_AFTER:
            # First sync, a database restored or replaced under us, or far behind.
            return Changes(version, None, started, signal)
        rows = (
            connection.execute(
                select(CHANGES.c.key).where(CHANGES.c.seq > seen, CHANGES.c.seq <= version).order_by(CHANGES.c.seq)
            )
        ).all()
        if len(rows) != version - seen:
            return Changes(version, None, started, signal)  # pruned under us
        return Changes(version, frozenset(key for (key,) in rows), started, signal)

    def apply(self, changes: Changes) -> None:
        if changes.keys is None:
            self.cache.clear()
            self.seen = changes.version
        else:
            self.cache.invalidate(changes.keys)
            if self.seen is None or changes.version > self.seen:
                self.seen = changes.version
        if changes.started >= self.synced_at:
            self.synced_at = changes.started
            self.signal_seen = changes.signal

    def announce(self, changes: Changes) -> None:
        """After a commit that changed tokens: tell the other processes on this machine.

        Our own readers need not poll for it: `changes` was read inside our transaction, under the
        write lock, so it covers every commit before ours. Unless someone announced meanwhile (then
        `bump` says so), the new value counts as seen, and our reads keep hitting the cache."""
        if self.signal is None or changes.keys == frozenset():
            return
        fresh = self.signal.bump(changes.signal)
        if fresh is not None and self.signal_seen == changes.signal:
            self.signal_seen = fresh

    def invalidate(self, keys: Iterable[str]) -> None:
        self.cache.invalidate(keys)

    # --- commits this feed did not see ----------------------------------------------------------

    def _watch_commits(self) -> None:
        sync_engine = self.engine.sync_engine

        def on_commit(connection: Any) -> None:
            if not connection.get_execution_options().get(APPLIED_OPTION):
                connection.info[_COMMITTED] = True

        def on_checkin(_dbapi_connection: Any, record: Any) -> None:
            # After the commit (the commit event fires before it): a poll started from now sees it.
            if record is not None and record.info.pop(_COMMITTED, False):
                self.dirty_at = time.monotonic()

        event.listen(sync_engine, "commit", on_commit)
        event.listen(sync_engine.pool, "checkin", on_checkin)
        self._listeners = ((sync_engine, "commit", on_commit), (sync_engine.pool, "checkin", on_checkin))

    async def aclose(self) -> None:
        for target, name, listener in self._listeners:
            if event.contains(target, name, listener):
                event.remove(target, name, listener)
        if self._poll is not None and not self._poll.done():
            self._poll.cancel()
            await asyncio.gather(self._poll, return_exceptions=True)
        if self.signal is not None:
            self.signal.close()


def _retrieve(task: asyncio.Task[None]) -> None:
    # A background poll's failure is reported to whoever waits for the next one; never logged as lost.
    if not task.cancelled():
        task.exception()
