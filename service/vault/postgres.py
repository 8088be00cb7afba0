"""The vault on PostgreSQL: one asyncpg connection reads and LISTENs, one writes (DESIGN.md, "The vault").

A cache miss is one round trip of one prepared statement; misses that arrive meanwhile share the next
one (service/vault/batching.py). A lone write is one statement in autocommit: one round trip, one
commit; concurrent writes share one transaction. Jobs on the service's other tables run on the
SQLAlchemy engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import is_unavailable
from service.vault import events, sql
from service.vault.batching import Batcher
from service.vault.cache import Ticket, TokenCache
from service.vault.freshness import CHANNEL, Notifications
from service.vault.planner import Plan, Step, closing_plan
from service.vault.writes import Decided, Job, ReadWrite, Write

# As pg_stat_activity shows them.
READER_NAME, WRITER_NAME = "salesbot vault reader", "salesbot vault writer"


def asyncpg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresBackend:
    dialect = sql.POSTGRES
    inline_reads = False

    def __init__(self, database_url: str, cache: TokenCache, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dsn = asyncpg_dsn(database_url)
        self._cache = cache
        self.freshness = Notifications(cache)
        self._reader: asyncpg.Connection | None = None
        self._reader_lock = asyncio.Lock()
        self._writer: asyncpg.Connection | None = None
        self.writes: Batcher[Write | ReadWrite, Any] = Batcher(self._run_batch, isolate_failures=True)

    async def start(self) -> None:
        async with self._reader_lock:
            await self._reader_connection()
        await self._writer_connection()

    # --- reads -----------------------------------------------------------------------------------

    def fresh(self) -> bool:
        """May a cache hit be served now? Only while listening, and within HIT_VALIDITY of a round trip."""
        return self.freshness.vouches()

    def may_fill(self) -> bool:
        """May what a load just read fill the cache? While listening (its ticket covers the rest)."""
        return self.freshness.listening

    async def confirm(self) -> bool:
        """Before a hit that fresh() no longer vouches for: one round trip on the LISTEN connection, so
        that every notification that came before its answer is handled (unless one that the lock kept
        this caller waiting for already vouches). True when the cache may answer."""
        async with self._reader_lock:
            if not self.freshness.vouches():
                self.freshness.round_trips += 1
                await self._fetch_locked("SELECT 1", ())
        return self.freshness.listening

    async def fetch(self, statement: str, params: Mapping[str, Any]) -> list[Any]:
        prepared = sql.for_dialect(statement, sql.POSTGRES)
        args = sql.bind(prepared, params, sql.POSTGRES)
        async with self._reader_lock:
            return await self._fetch_locked(prepared.text, args)

    async def _fetch_locked(self, text: str, args: Sequence[Any]) -> list[Any]:
        try:
            return await self._round_trip(await self._reader_connection(), text, args)
        except Exception as error:
            if not self._drop_if_lost(error, "_reader"):
                raise
        # The server dropped the connection (a restart, pg_terminate_backend): once more, on a new one.
        return await self._round_trip(await self._reader_connection(), text, args)

    async def _round_trip(self, connection: asyncpg.Connection, text: str, args: Sequence[Any]) -> list[Any]:
        sent = time.monotonic()
        rows = list(await connection.fetch(text, *args))
        self.freshness.answered(sent)  # any read on this connection vouches for the cache, too
        return rows

    scan = fetch  # one connection for every read: no event loop to spare here

    def _drop_if_lost(self, error: Exception, attribute: str) -> bool:
        """Forget a connection the error says is gone; True when a retry on a new one is worth it."""
        connection: asyncpg.Connection | None = getattr(self, attribute)
        if connection is None or not (connection.is_closed() or is_unavailable(error)):
            return False
        connection.terminate()
        setattr(self, attribute, None)
        if attribute == "_reader":
            self.freshness.stopped()
        return True

    async def _reader_connection(self) -> asyncpg.Connection:
        if self._reader is None or self._reader.is_closed():
            self.freshness.stopped()
            connection = await asyncpg.connect(self._dsn, server_settings={"application_name": READER_NAME})
            await connection.add_listener(CHANNEL, self._heard)
            connection.add_termination_listener(self._lost)
            self._reader = connection
            self.freshness.started()
        return self._reader

    def _heard(self, _connection: Any, pid: int, _channel: str, key: str) -> None:
        self.freshness.heard(pid, key)

    def _lost(self, _connection: Any) -> None:
        self.freshness.stopped()

    # --- writes ----------------------------------------------------------------------------------

    async def _writer_connection(self) -> asyncpg.Connection:
        if self._writer is None or self._writer.is_closed():
            self._writer = await asyncpg.connect(self._dsn, server_settings={"application_name": WRITER_NAME})
            self.freshness.own_pid = self._writer.get_server_pid()
        return self._writer

    async def _run_batch(self, units: Sequence[Write | ReadWrite]) -> list[Any]:
        try:
            return await self._run_here(units)
        except asyncio.CancelledError:
            # Whoever waited went away while the statements ran: whether they committed is unknown, so
            # nothing they touched stays cached, and the connection (mid-statement) is replaced.
            for unit in units:
                if isinstance(unit, Write):
                    self._cache.invalidate(unit.plan.touched)
            if self._writer is not None:
                self._writer.terminate()
                self._writer = None
            raise

    async def _run_here(self, units: Sequence[Write | ReadWrite]) -> list[Any]:
        try:
            return await self._run_on(await self._writer_connection(), units)
        except Exception as error:
            # A connection the server dropped fails before anything commits: once more, on a new one.
            if not self._drop_if_lost(error, "_writer"):
                raise
        return await self._run_on(await self._writer_connection(), units)

    async def _run_on(self, connection: asyncpg.Connection, units: Sequence[Write | ReadWrite]) -> list[Any]:
        plans: list[tuple[Plan, Ticket | None, set[str]]] = []
        fused = _fused(units)
        if fused is not None:
            # Autocommit: a lone write and its event in one statement; or a batch of one statement without
            # events, one round trip and one commit (asyncpg pipelines executemany and runs it as one
            # implicit transaction: all or nothing).
            text, rows = fused
            if len(rows) == 1:
                await connection.execute(text, *rows[0])
            else:
                await connection.executemany(text, rows)
            results: list[Any] = []
            for unit in units:
                returned: list[list[Any]] = [[]]
                results.append(returned)
                plans.append((unit.plan, unit.ticket, unit.plan.changed(returned)))  # type: ignore[union-attr]
        else:
            async with connection.transaction():
                results = []
                position = 0
                while position < len(units):
                    same = _same_statement(units, position)
                    if len(same) > 1:
                        # Consecutive writes of one statement: one pipelined executemany, rows in order.
                        first = same[0].plan.steps[0]
                        rows = [row for unit in same for row in unit.plan.steps[0].rows]
                        await run_plan(connection, Plan([Step(first.statement, rows, dialect=first.dialect)]))
                        for unit in same:
                            results.append([[]])
                            plans.append((unit.plan, unit.ticket, unit.plan.changed([[]])))
                    else:
                        results.append(await self._run_unit(connection, units[position], plans))
                    position += len(same) or 1
                # The event log's closing steps last, after every row lock of the batch (DESIGN.md, "Order").
                await run_plan(connection, closing_plan([plan for plan, _ticket, _touched in plans]))
        # This writer's own notifications are not applied (freshness.Notifications): settle here.
        for plan, ticket, touched in plans:
            self._cache.settle(ticket, plan.entries, touched)
        return results

    async def _run_unit(
        self, connection: asyncpg.Connection, unit: Write | ReadWrite, plans: list[tuple[Plan, Ticket | None, set[str]]]
    ) -> Any:
        if isinstance(unit, Write):
            returned = await run_plan(connection, unit.plan)
            plans.append((unit.plan, unit.ticket, unit.plan.changed(returned)))
            return returned
        lock = sql.for_dialect(sql.ADVISORY_LOCK, sql.POSTGRES)
        for name in sorted(unit.locks):  # one order for everyone: no deadlock
            await connection.execute(lock.text, name)
        found = []
        for statement, params in unit.reads:
            read = sql.for_dialect(statement, sql.POSTGRES)
            found.append(
                [tuple(record) for record in await connection.fetch(read.text, *sql.bind(read, params, sql.POSTGRES))]
            )
        plan, result = unit.decide(found)
        returned = await run_plan(connection, plan)
        plans.append((plan, unit.ticket, plan.changed(returned)))
        return Decided(result, [key for keys in returned for key in keys])

    async def run_job(self, job: Job) -> Any:
        async with self._engine.begin() as connection:
            return await connection.run_sync(job)

    async def aclose(self) -> None:
        await self.writes.drain()
        for connection in (self._reader, self._writer):
            if connection is not None and not connection.is_closed():
                await connection.close()
        self.freshness.stopped()


def _single_step(unit: Write | ReadWrite) -> bool:
    """A write of one statement that returns nothing (any number of rows)."""
    if not isinstance(unit, Write) or len(unit.plan.steps) != 1:
        return False
    step = unit.plan.steps[0]
    return not step.returning and step.dialect in (None, sql.POSTGRES)


def _same_statement(units: Sequence[Write | ReadWrite], start: int) -> list[Write]:
    """The writes from `start` on that are each one statement, the same one, returning nothing."""
    same: list[Write] = []
    for unit in units[start:]:
        if not _single_step(unit) or (same and unit.plan.steps[0].statement != same[0].plan.steps[0].statement):  # type: ignore[union-attr]
            break
        same.append(unit)  # type: ignore[arg-type]
    return same


def _fused(units: Sequence[Write | ReadWrite]) -> tuple[str, list[tuple[Any, ...]]] | None:
    """When every unit is one statement of one row that returns nothing, and one statement for all of
    them: that statement and each unit's arguments; None otherwise. A lone write's event (its lock, row
    and outbox row) is folded into it (events.write_and_log); a batch with events is not fused, since
    a later row's lock would then be taken while holding the event log's lock (DESIGN.md, "Order")."""
    statement: str | None = None
    params: list[Mapping[str, Any]] = []
    for unit in units:
        if not isinstance(unit, Write) or len(unit.plan.steps) != 1:
            return None
        step = unit.plan.steps[0]
        if step.returning or len(step.rows) != 1 or step.dialect not in (None, sql.POSTGRES):
            return None
        row = step.rows[0]
        closing = [closing for closing in unit.plan.closing if closing.dialect in (None, sql.POSTGRES)]
        if not closing:
            text = step.statement
        elif (
            len(units) == 1
            and len(closing) == 1
            and closing[0].statement == events.LOG_EVENT
            and len(closing[0].rows) == 1
            and closing[0].rows[0]["key"] == row.get("key")
            and sql.is_plain_upsert(step.statement)
        ):
            text = events.write_and_log(step.statement)
            row = {**row, **{events.WRITTEN_PREFIX + name: value for name, value in closing[0].rows[0].items()}}
        else:
            return None
        if statement is None:
            statement = text
        elif text != statement:
            return None
        params.append(row)
    if statement is None:
        return None
    prepared = sql.for_dialect(statement, sql.POSTGRES)
    return prepared.text, [sql.bind(prepared, row, sql.POSTGRES) for row in params]


async def run_plan(connection: asyncpg.Connection, plan: Plan) -> list[list[Any]]:
    """Each step in order; for a returning step, what its rows returned (first column)."""
    returned: list[list[Any]] = []
    for step in plan.steps:
        if step.dialect not in (None, sql.POSTGRES):
            returned.append([])
            continue
        prepared = sql.for_dialect(step.statement, sql.POSTGRES)
        rows = [sql.bind(prepared, row, sql.POSTGRES) for row in step.rows]
        if step.returning:
            found = []
            for row in rows:
                found += [record[0] for record in await connection.fetch(prepared.text, *row)]
            returned.append(found)
        elif len(rows) == 1:
            await connection.execute(prepared.text, *rows[0])
            returned.append([])
        else:
            await connection.executemany(prepared.text, rows)
            returned.append([])
    return returned
