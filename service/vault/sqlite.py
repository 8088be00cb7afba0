"""The vault on a SQLite file: reads inline on the event loop, writes on one writer thread (DESIGN.md, "The vault").

A cache miss is one indexed read on a plain sqlite3 connection, run where the caller is: a thread hop
costs more than the read. Reads that walk the table (listings, jobs' batches) run in a thread of
their own, so a page that scans far never holds the event loop. Writes go to one thread that holds
the process's one write connection: each batch is BEGIN IMMEDIATE, its statements, the change log's
new keys, one COMMIT (one fsync).
"""

from __future__ import annotations

import asyncio
import functools
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from service.crypto import KeyRing
from service.db import BUSY_TIMEOUT_MS, MMAP_BYTES, WRITE_OPTION, create_sqlite_writer
from service.vault import sql
from service.vault.batching import Batcher
from service.vault.cache import Ticket, TokenCache
from service.vault.freshness import DataVersion
from service.vault.planner import Plan, closing_plan
from service.vault.writes import Decided, Job, ReadWrite, Unit, Write

# Versions before and after, keys the change log names, each unit's result, and the plans run with the
# tickets that may fill the cache from them.
T = TypeVar("T")
_Outcome = tuple[int, int, set[str], list[Any], list[tuple[Plan, Ticket | None, set[str]]]]


class SQLiteBackend:
    dialect = sql.SQLITE
    inline_reads = True

    def __init__(self, path: Path, keyring: KeyRing, cache: TokenCache) -> None:
        self._cache = cache
        self._path = path
        self._reader = _read_only(path)
        self._cursor = self._reader.cursor()
        self._scanner: sqlite3.Connection | None = None  # opened in the scan thread
        self._scan_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salesbot-scan")
        self.freshness = DataVersion(self._cursor, cache)
        self.freshness.check()  # where the change log stands now: the (empty) cache reflects it
        self._engine = create_sqlite_writer(path, keyring)
        self._thread = WriterThread("salesbot-writer")
        self._connection: Connection | None = None  # opened in the writer thread, kept for the store's life
        self._cursor_w: sqlite3.Cursor  # on that connection's driver connection
        self._last_prune: int | None = None  # the change log's version when the writer last pruned it
        self.writes: Batcher[Unit, Any] = Batcher(self._run_batch, isolate_failures=True)

    # --- reads -----------------------------------------------------------------------------------

    def fresh(self) -> bool:
        self.freshness.check()  # every hit: another connection's commit is never served past
        return True

    def may_fill(self) -> bool:
        return True

    async def confirm(self) -> bool:
        return self.fresh()  # never needed: fresh() is always True here

    def read_entry(self, key: str) -> tuple[Any, ...] | None:
        """One token's (key, ciphertext, expires_at, refreshable): the cache miss, inline."""
        return self._cursor.execute(_LOAD_ONE, (key,)).fetchone()  # type: ignore[no-any-return]

    def read(self, statement: str, params: Mapping[str, Any]) -> list[Any]:
        prepared = sql.for_dialect(statement, sql.SQLITE)
        return self._cursor.execute(prepared.text, sql.bind(prepared, params, sql.SQLITE)).fetchall()

    async def fetch(self, statement: str, params: Mapping[str, Any]) -> list[Any]:
        return self.read(statement, params)

    async def scan(self, statement: str, params: Mapping[str, Any]) -> list[Any]:
        """A read that may walk much of the table, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._scan_thread, self._scan, statement, params)

    def _scan(self, statement: str, params: Mapping[str, Any]) -> list[Any]:
        if self._scanner is None:
            # A scan walks the whole table: through a memory map every page it passed would stay in this
            # process's RSS (256 MB at a million tokens, measured); SQLite's own page cache stays bounded.
            self._scanner = _read_only(self._path, mmap=False)
        prepared = sql.for_dialect(statement, sql.SQLITE)
        return self._scanner.execute(prepared.text, sql.bind(prepared, params, sql.SQLITE)).fetchall()

    # --- writes ----------------------------------------------------------------------------------

    async def _run_batch(self, units: Sequence[Unit]) -> list[Any]:
        # Settled on the event loop as the thread's result arrives, before anyone resumes, and even if
        # whoever waited was cancelled meanwhile (the thread commits anyway).
        return (await self._thread.call(functools.partial(self._run_here, units), then=self._settle))[3]

    def _run_here(self, units: Sequence[Unit]) -> _Outcome:
        if self._connection is None:
            self._connection = self._engine.connect().execution_options(**{WRITE_OPTION: True})
            self._cursor_w = self._connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        connection, cursor = self._connection, self._cursor_w
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
        if self._last_prune is None:
            self._last_prune = after
        elif after - self._last_prune >= PRUNE_EVERY:
            self._last_prune = after
            prune = sql.for_dialect(sql.PRUNE_CHANGES, sql.SQLITE)
            cursor.execute(prune.text, sql.bind(prune, {"upto": after - KEEP_CHANGES}, sql.SQLITE))
        return outcome

    def _settle(self, outcome: _Outcome) -> None:
        before, after, changed, _results, plans = outcome
        settled: set[str] = set()
        for plan, ticket, touched in plans:
            self._cache.settle(ticket, plan.entries, touched)
            settled |= touched
        self._cache.invalidate(changed - settled)  # keys a job changed
        self.freshness.committed(before, after)

    async def run_job(self, job: Job) -> Any:
        return await self.writes.submit(job)

    async def aclose(self) -> None:
        await self.writes.drain()
        loop = asyncio.get_running_loop()
        await self._thread.call(self._close_writer)
        self._thread.stop()
        await loop.run_in_executor(self._scan_thread, self._close_scanner)
        self._scan_thread.shutdown(wait=True)
        self._reader.close()

    def _close_scanner(self) -> None:
        if self._scanner is not None:
            self._scanner.close()
            self._scanner = None

    def _close_writer(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._engine.dispose()


# The change log keeps at least this many entries (readers further behind drop their whole cache);
# the writer prunes a bite of it every PRUNE_EVERY changes rather than every trigger doing it.
KEEP_CHANGES = 10_000
PRUNE_EVERY = 1_000


_LOAD_ONE = sql.for_dialect(sql.LOAD_ONE, sql.SQLITE).text


class WriterThread:
    """One thread that runs functions in order and hands each result back to the event loop.

    What run_in_executor does, with half its round trip (measured: ~60 against ~120 µs here): a plain
    queue in, call_soon_threadsafe out, no concurrent.futures Future in between."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # A daemon: a process that exits without closing its store loses nothing acknowledged.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def call(self, function: Callable[[], T], *, then: Callable[[T], None] | None = None) -> asyncio.Future[T]:
        """Run `function` in the thread; `then(result)` runs on the event loop before the future resolves,
        also when the future was cancelled meanwhile."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, function, then))
        return future

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, future, function, then = item
            try:
                result, error = function(), None
            except BaseException as exc:
                result, error = None, exc
            loop.call_soon_threadsafe(_deliver, future, result, error, then)


def _deliver(
    future: asyncio.Future[T], result: T, error: BaseException | None, then: Callable[[T], None] | None
) -> None:
    if error is None and then is not None:
        then(result)
    if future.done():  # cancelled: nobody waits, but `then` has run
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _read_only(path: Path, *, mmap: bool = True) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA query_only=ON")
    if mmap:
        # Pages read through a memory map rather than a read() system call each: a cache miss is a few
        # page look-ups, and on a table this wide the calls were a third of its time (measured).
        connection.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    return connection


def _run_units(connection: Connection, cursor: sqlite3.Cursor, units: Sequence[Unit]) -> _Outcome:
    """Inside a write transaction: every unit, and which keys the change log says the batch changed."""
    before = cursor.execute(sql.CHANGE_VERSION).fetchone()[0]
    results: list[Any] = []
    plans: list[tuple[Plan, Ticket | None, set[str]]] = []
    jobs = False
    for unit in units:
        if isinstance(unit, Write):
            returned = run_plan(cursor, unit.plan)
            results.append(returned)
            plans.append((unit.plan, unit.ticket, unit.plan.changed(returned)))
        elif isinstance(unit, ReadWrite):
            found = []
            for statement, params in unit.reads:
                prepared = sql.for_dialect(statement, sql.SQLITE)
                found.append(cursor.execute(prepared.text, sql.bind(prepared, params, sql.SQLITE)).fetchall())
            plan, result = unit.decide(found)
            returned = run_plan(cursor, plan)
            results.append(Decided(result, [key for keys in returned for key in keys]))
            plans.append((plan, unit.ticket, plan.changed(returned)))
        else:
            results.append(unit(connection))
            jobs = True
    run_plan(cursor, closing_plan([plan for plan, _ticket, _touched in plans]))
    after = cursor.execute(sql.CHANGE_VERSION).fetchone()[0]
    changed = set()
    if jobs and after != before:  # a job's changes are known only to the change log
        rows = cursor.execute(sql.CHANGED_KEYS, {"after": before, "upto": after}).fetchall()
        changed = {key for (key,) in rows}
    return before, after, changed, results, plans


def run_plan(cursor: sqlite3.Cursor, plan: Plan) -> list[list[Any]]:
    """Each step in order; for a returning step, what its rows returned (first column)."""
    returned: list[list[Any]] = []
    for step in plan.steps:
        if step.dialect not in (None, sql.SQLITE):
            returned.append([])
            continue
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
