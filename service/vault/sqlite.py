"""The vault on a SQLite file: reads inline on the event loop, writes on one writer thread (DESIGN.md, "The vault").

A cache miss is one indexed read on a plain sqlite3 connection, run where the caller is: a thread hop
costs more than the read. Writes go to one thread that holds the process's one write connection:
each batch is BEGIN IMMEDIATE, its statements, the change log's new keys, one COMMIT (one fsync).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from service.crypto import KeyRing
from service.db import BUSY_TIMEOUT_MS, WRITE_OPTION, create_sqlite_writer
from service.vault import sql
from service.vault.batching import Batcher
from service.vault.cache import Ticket, TokenCache
from service.vault.freshness import DataVersion
from service.vault.planner import Plan
from service.vault.writes import Decided, Job, ReadWrite, Unit, Write

# Versions before and after, keys the change log names, each unit's result, and the plans run with the
# tickets that may fill the cache from them.
_Outcome = tuple[int, int, set[str], list[Any], list[tuple[Plan, Ticket | None]]]


class SQLiteBackend:
    dialect = sql.SQLITE
    inline_reads = True

    def __init__(self, path: Path, keyring: KeyRing, cache: TokenCache) -> None:
        self._cache = cache
        self._reader = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        self._reader.execute("PRAGMA query_only=ON")
        self._cursor = self._reader.cursor()
        self.freshness = DataVersion(self._cursor, cache)
        self._engine = create_sqlite_writer(path, keyring)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salesbot-writer")
        self._connection: Connection | None = None  # opened in the writer thread, kept for the store's life
        self._pruned = 0  # the change log holds nothing at or below this seq any more
        self.writes: Batcher[Unit, Any] = Batcher(self._run_batch, isolate_failures=True)

    # --- reads -----------------------------------------------------------------------------------

    def fresh(self) -> bool:
        self.freshness.check()
        return True

    def read(self, statement: str, params: Mapping[str, Any]) -> list[Any]:
        prepared = sql.for_dialect(statement, sql.SQLITE)
        return self._cursor.execute(prepared.text, sql.bind(prepared, params, sql.SQLITE)).fetchall()

    async def fetch(self, statement: str, params: Mapping[str, Any]) -> list[Any]:
        return self.read(statement, params)

    # --- writes ----------------------------------------------------------------------------------

    async def _run_batch(self, units: Sequence[Unit]) -> list[Any]:
        done = asyncio.get_running_loop().run_in_executor(self._thread, self._run_here, units)
        # Settled in a callback, registered first: it runs before we resume, and even if we are
        # cancelled meanwhile (the thread commits anyway).
        done.add_done_callback(functools.partial(self._settle, units))
        return (await asyncio.shield(done))[3]

    def _run_here(self, units: Sequence[Unit]) -> _Outcome:
        if self._connection is None:
            self._connection = self._engine.connect().execution_options(**{WRITE_OPTION: True})
        connection = self._connection
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        if any(callable(unit) for unit in units):
            with connection.begin():  # BEGIN IMMEDIATE (service/db.py); jobs run on this Connection
                return self._run_units(connection, cursor, units)
        # Vault writes only: BEGIN and COMMIT straight on the driver, without SQLAlchemy's machinery.
        cursor.execute("BEGIN IMMEDIATE")
        try:
            outcome = self._run_units(connection, cursor, units)
            cursor.execute("COMMIT")
        except BaseException:
            if cursor.connection.in_transaction:
                cursor.execute("ROLLBACK")
            raise
        return outcome

    def _run_units(self, connection: Connection, cursor: sqlite3.Cursor, units: Sequence[Unit]) -> _Outcome:
        outcome = _run_units(connection, cursor, units)
        after = outcome[1]
        if after - self._pruned > KEEP_CHANGES + PRUNE_EVERY:
            prune = sql.for_dialect(sql.PRUNE_CHANGES, sql.SQLITE)
            self._pruned = after - KEEP_CHANGES
            cursor.execute(prune.text, sql.bind(prune, {"upto": self._pruned}, sql.SQLITE))
        return outcome

    def _settle(self, units: Sequence[Unit], done: asyncio.Future[_Outcome]) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        before, after, changed, _results, plans = done.result()
        settled: set[str] = set()
        for plan, ticket in plans:
            self._cache.settle(ticket, plan.entries, plan.touched)
            settled |= plan.touched
        self._cache.invalidate(changed - settled)  # keys a job changed
        self.freshness.committed(before, after)

    async def run_job(self, job: Job) -> Any:
        return await self.writes.submit(job)

    async def aclose(self) -> None:
        await self.writes.drain()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close_writer)
        self._thread.shutdown(wait=True)
        self._reader.close()

    def _close_writer(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._engine.dispose()


# The change log keeps at least this many entries (readers further behind drop their whole cache);
# the writer prunes it every PRUNE_EVERY changes rather than every trigger doing it.
KEEP_CHANGES = 10_000
PRUNE_EVERY = 1_000


def _run_units(connection: Connection, cursor: sqlite3.Cursor, units: Sequence[Unit]) -> _Outcome:
    """Inside a write transaction: every unit, and which keys the change log says the batch changed."""
    before = cursor.execute(sql.CHANGE_VERSION).fetchone()[0]
    results: list[Any] = []
    plans: list[tuple[Plan, Ticket | None]] = []
    for unit in units:
        if isinstance(unit, Write):
            results.append(run_plan(cursor, unit.plan))
            plans.append((unit.plan, unit.ticket))
        elif isinstance(unit, ReadWrite):
            found = []
            for statement, params in unit.reads:
                prepared = sql.for_dialect(statement, sql.SQLITE)
                found.append(cursor.execute(prepared.text, sql.bind(prepared, params, sql.SQLITE)).fetchall())
            plan, result = unit.decide(found)
            returned = run_plan(cursor, plan)
            results.append(Decided(result, [key for keys in returned for key in keys]))
            plans.append((plan, None))
        else:
            results.append(unit(connection))
    after = cursor.execute(sql.CHANGE_VERSION).fetchone()[0]
    changed = set()
    if after != before:
        rows = cursor.execute(sql.CHANGED_KEYS, {"after": before, "upto": after}).fetchall()
        changed = {key for (key,) in rows}
    return before, after, changed, results, plans


def run_plan(cursor: sqlite3.Cursor, plan: Plan) -> list[list[Any]]:
    """Each step in order; for a returning step, what its rows returned (first column)."""
    returned: list[list[Any]] = []
    for step in plan.steps:
        prepared = sql.for_dialect(step.statement, sql.SQLITE)
        rows = [sql.bind(prepared, row, sql.SQLITE) for row in step.rows]
        if step.returning:
            found = []
            for row in rows:
                found += [value for (value, *_rest) in cursor.execute(prepared.text, row).fetchall()]
            returned.append(found)
        else:
            cursor.executemany(prepared.text, rows)
            returned.append([])
    return returned
