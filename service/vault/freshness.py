"""Keeping the cache true to the database: the database itself says what changed (DESIGN.md, "Freshness").

SQLite: `PRAGMA data_version` on the reader's connection changes whenever any other connection (another
process, the sqlite3 shell, `restore`, this process's own writer) committed; then the change log that
revision 0004's triggers keep says which keys. PostgreSQL: a trigger NOTIFYs the changed key on commit,
and one connection per process LISTENs; while it is not listening the cache is not used. A notification
is handled only when the event loop gets to it, which a reader that only hits the cache never lets it
do: so a hit is vouched for only within HIT_VALIDITY of a round trip on the LISTEN connection, and the
first hit after that makes one (which the notifications that came before its answer are handled ahead of).
"""

from __future__ import annotations

import sqlite3
import time

from service.vault import sql
from service.vault.cache import TokenCache

CHANNEL = "salesbot_tokens"  # revision 0006's trigger notifies on it
# Further behind than this, dropping the whole cache is cheaper than reading which keys changed.
FULL_FLUSH_AFTER = 1_000
# PostgreSQL: how long (seconds) after a round trip on the LISTEN connection was sent a cache hit may be
# served without another. A commit that returned before that round trip was sent has been heard by the
# time it comes back, so a read that begins 2 x HIT_VALIDITY (50 ms) after another process's commit
# returned never sees the old value, at the cost of at most one round trip per HIT_VALIDITY per process.
HIT_VALIDITY = 0.025


class DataVersion:
    """SQLite: checked before every cache hit (one pragma); catches up from the change log when it moved."""

    round_trips = 0  # never any: the pragma is local, so every hit checks (Notifications counts its own)

    def __init__(self, cursor: sqlite3.Cursor, cache: TokenCache) -> None:
        self._cursor = cursor
        self._cache = cache
        self._data_version: int | None = None
        self.seen: int | None = None  # the change-log version the cache reflects

    def check(self) -> None:
        data_version = self._cursor.execute("PRAGMA data_version").fetchone()[0]
        if data_version != self._data_version:
            # Read before the log: a commit after this pragma moves it again, and the next check sees it.
            self._data_version = data_version
            self._catch_up()

    def _catch_up(self) -> None:
        version = self._cursor.execute(sql.CHANGE_VERSION).fetchone()[0]
        seen = self.seen
        if seen is not None and version == seen:
            return
        if seen is None or version < seen or version - seen > FULL_FLUSH_AFTER:
            # First look, a database restored under us, or far behind.
            self._cache.clear()
        else:
            rows = self._cursor.execute(sql.CHANGED_KEYS, {"after": seen, "upto": version}).fetchall()
            if len(rows) != version - seen:
                self._cache.clear()  # pruned under us
            else:
                self._cache.invalidate(key for (key,) in rows)
        self.seen = version

    def committed(self, before: int, after: int) -> None:
        """This process's writer committed versions (before, after] and settled their keys itself."""
        if self.seen == before:
            self.seen = after


def change_version(connection: sqlite3.Connection) -> int:
    """The newest entry of a SQLite file's change log (0 when it has none, or no log)."""
    try:
        return int(connection.execute(sql.CHANGE_VERSION).fetchone()[0])
    except sqlite3.DatabaseError:
        return 0


def announce_replaced(connection: sqlite3.Connection, before: int) -> None:
    """After a SQLite file's pages were replaced under running processes (`restore`: the backup API
    fires no trigger), make the log jump past anything they have seen, so each drops its whole cache.
    `before` is the log's version before the replacement."""
    prepared = sql.for_dialect(sql.CHANGE_GAP, sql.SQLITE)
    seq = max(before, change_version(connection)) + FULL_FLUSH_AFTER + 1
    connection.execute(prepared.text, sql.bind(prepared, {"seq": seq}, sql.SQLITE))


class Notifications:
    """PostgreSQL: what the LISTEN connection hears. The cache may answer only while it listens."""

    def __init__(self, cache: TokenCache) -> None:
        self._cache = cache
        self.listening = False
        self.own_pid: int | None = None  # this process's writer: its commits are applied as they return
        self.received = 0
        self.vouched_until = 0.0  # time.monotonic(): until then a hit needs no round trip
        self.round_trips = 0  # those made only to vouch for hits (tests count them)

    def vouches(self) -> bool:
        """May a cache hit be served now, without a round trip first?"""
        return self.listening and time.monotonic() < self.vouched_until

    def answered(self, sent: float) -> None:
        """A round trip on the LISTEN connection, sent at `sent` (time.monotonic()), came back while it
        listened: every notification of a commit that returned before `sent` has been handled. (asyncpg
        schedules a notification's callback with call_soon as it reads it; the answer, read after it,
        wakes the awaiting task through call_soon too, so the callback has run by the time it resumes.)"""
        if self.listening:
            self.vouched_until = max(self.vouched_until, sent + HIT_VALIDITY)

    def started(self) -> None:
        # Whatever changed while nobody listened is unknown: start from an empty cache.
        self._cache.clear()
        self.listening = True

    def stopped(self) -> None:
        self.listening = False
        self.vouched_until = 0.0

    def heard(self, pid: int, key: str) -> None:
        self.received += 1
        if pid != self.own_pid:
            self._cache.invalidate((key,))
