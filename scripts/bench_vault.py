"""Workloads 6-11 of scripts/bench.py: what one caller pays, freshness across processes, big listings and
Shopify tokens, each beside the seed and a floor (issue 11). Run through bench.py (`--workloads 6,7,...`).

6 one writer   2,000 sequential store_token from one caller on SQLite, synchronous=FULL on every side (read
               back with PRAGMA and printed). seed: its TokenStorage.store_token in a plain loop. floor: the
               minimal design, one plain sqlite3 connection on one writer thread (ThreadPoolExecutor(1)), one
               hop and one BEGIN IMMEDIATE / INSERT OR REPLACE / COMMIT a write, Fernet on the caller's side.
7 cold reads   one caller, get_token of uniform random keys over 100,000 tokens written beforehand by plain
               inserts (not by the measured store); ours opened with a 10,000-entry cache, so most reads miss.
               seed: its get_token in a loop; floor: a plain sqlite3 read run inline, plus Fernet.
8 PostgreSQL   6 and 7 with ours on PostgreSQL, beside the seed on SQLite and a PostgreSQL floor: one asyncpg
               connection running, per write, a prepared INSERT ... ON CONFLICT (key) DO UPDATE in autocommit
               and, per read, a prepared SELECT value ... WHERE key = $1 plus Fernet. The floor's table is
               `floor_tokens` in the same scratch database, made by CREATE TABLE ... (LIKE tokens INCLUDING
               ALL): our columns, keys and indexes, without our trigger.
9 freshness    process A (a child with its own TokenStore) deletes keys one at a time; this process (B) holds
               them cached and reads each in a loop. Both stamp time.monotonic (one clock for every process on
               Linux). stale: reads that began after A's delete returned and still got the token; delay: from
               A's return to the first read of B that missed. On SQLite also: rows changed with the sqlite3
               module directly (as the sqlite3 shell would) are seen by B's next read.
10 listing     get_all_tokens_by_type over 1,000,000 tokens (--listing-tokens): its time, the worst lag of a
               1 ms ticker task meanwhile (the longest the event loop was held), and the peak RSS growth of
               it and of iter_tokens_by_type consumed one item at a time; each in a child process of its own
               (VmHWM reset before the call). seed: its get_all_tokens_by_type, synchronous: on an event loop
               it would hold the loop for the whole call.
11 Shopify     get_shopify_token on a token not due for refresh (expires in an hour, refresh token stored)
               against get_token on the same key, both warm, on SQLite and on PostgreSQL; beside them the
               bot's page_connection (a Page linked to that shop's account) and shop_connection, warm.

PostgreSQL (8, and the second halves of 9 and 11) runs in a scratch database made for the run
(salesbot_bench_<pid> on --postgres, migrated by Alembic, dropped at the end); when the server does not
answer, they are skipped with one line. Every side here uses one Fernet key (the seed's, listed first in
our TOKEN_ENCRYPTION_KEYS), so stored tokens are encrypted once and each side decrypts with one key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from scripts.bench import (
    ROOT,
    SECRET,
    SEED_TABLE,
    SYNC_NAMES,
    Result,
    Sides,
    count_durable,
    floor_connection,
    floor_get_put,
    fmt_ms,
    fmt_rate,
    latency_result,
    median_result,
    percentile,
    seed_synchronous,
    table,
    token_keys,
    value_for,
)
from service import keys, migrate
from service.crypto import KeyRing, derive_seed_key
from service.models import utcnow
from service.settings import Settings
from service.vault import TokenStore, TokenWrite
from tests.seed_loader import load_seed_module

SHARED_KEY = derive_seed_key(SECRET).decode()  # the seed's key, our primary one: one ciphertext serves all sides
INSERT_ROW = "INSERT OR REPLACE INTO tokens (key, value, type) VALUES (?, ?, 'token')"
PG_FLOOR_TABLE = "CREATE TABLE floor_tokens (LIKE tokens INCLUDING ALL)"
PG_FLOOR_UPSERT = (
    "INSERT INTO floor_tokens (key, value, type) VALUES ($1, $2, 'token') "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, type = excluded.type"
)
PG_FLOOR_SELECT = "SELECT value FROM floor_tokens WHERE key = $1"
GIVE_UP_S = 2.0  # workload 9: a key still served this long after its delete returned counts as never dropped
SHOP = "bench-shop.myshopify.com"  # workload 11; its token's key is SHOPIFY_ACCESS_TOKEN_bench-shop
PAGE = "4242"  # workload 11: a Page in that shop's account
METHODS_11 = ("get_token", "get_shopify_token", "page_connection", "shop_connection")
# Workload 11's targets: each method's warm cost within this many times get_token's.
TARGETS_11 = {"get_shopify_token": 2.0, "page_connection": 3.0, "shop_connection": 3.0}
# A child process running bench_vault.<name>(payload): workload 9's process A, workload 10's listings.
CHILD = (
    "import json, sys; sys.path.insert(0, {root!r}); "
    "from scripts import bench_vault; bench_vault.{name}(json.loads(sys.argv[1]))"
)


@dataclass(frozen=True)
class Sizes:
    writes: int = 2_000  # 6, 8
    tokens: int = 100_000  # 7, 8
    lookups: int = 20_000  # 7, 8
    cache: int = 10_000  # 7, 8: our cache, smaller than the key set
    deletes: int = 200  # 9, per round and backend
    shell_changes: int = 20  # 9
    listing: int = 1_000_000  # 10
    calls: int = 200_000  # 11, per round and method


QUICK = Sizes(
    writes=200, tokens=2_000, lookups=1_000, cache=200, deletes=20, shell_changes=5, listing=5_000, calls=10_000
)


def sizes_for(args: Any) -> Sizes:
    chosen = QUICK if args.quick else Sizes()
    if args.listing_tokens is not None:
        chosen = Sizes(**{**chosen.__dict__, "listing": args.listing_tokens})
    return chosen


# --- measuring -----------------------------------------------------------------------------------


def rotated(names: Sequence[str], round_number: int) -> list[str]:
    """Every side once a round, a different one first each round: none always runs on a cold disk."""
    shift = round_number % len(names)
    return [*names[shift:], *names[:shift]]


def right_value(key: str, got: object) -> bool:
    return got == value_for(key, 0)


async def one_caller(
    call: Callable[[str], Awaitable[object]], keys_: Sequence[str], check: Callable[[str, object], bool] | None = None
) -> Result:
    """One coroutine calling in a loop; errors: calls that raised or (with check) answered wrong."""
    latencies: list[int] = []
    errors = 0
    started = time.perf_counter()
    for key in keys_:
        began = time.perf_counter_ns()
        try:
            got = await call(key)
            if check is not None and not check(key, got):
                errors += 1
        except Exception:
            errors += 1
        latencies.append(time.perf_counter_ns() - began)
    return latency_result(len(keys_), time.perf_counter() - started, latencies, errors=errors)


def plain_loop(
    call: Callable[[str], object], keys_: Sequence[str], check: Callable[[str, object], bool] | None = None
) -> Result:
    """The same for a synchronous side (the seed, a floor): a plain loop, no event loop."""
    latencies: list[int] = []
    errors = 0
    started = time.perf_counter()
    for key in keys_:
        began = time.perf_counter_ns()
        try:
            got = call(key)
            if check is not None and not check(key, got):
                errors += 1
        except Exception:
            errors += 1
        latencies.append(time.perf_counter_ns() - began)
    return latency_result(len(keys_), time.perf_counter() - started, latencies, errors=errors)


def compare(results: dict[str, list[Result]], a: str, b: str, target: float | None = None) -> str:
    """`a / b: 1.35x ops/s (a ahead; rounds: ...)`, from the medians, with each round's own ratio."""
    if not results.get(b):
        return f"{a} / {b}: - (no seed chapter)"
    ratio = median_result(results[a]).ops_per_s / median_result(results[b]).ops_per_s
    per_round = " ".join(f"{x.ops_per_s / y.ops_per_s:.2f}" for x, y in zip(results[a], results[b], strict=True))
    line = f"{a} / {b}: {ratio:.2f}x ops/s ({a if ratio >= 1 else b} ahead; each round: {per_round})"
    if target is not None:
        line += f"; target >= {target:g}x: {'met' if ratio >= target else 'NOT MET'}"
    return line


def side_table(
    title: str, columns: Sequence[str], results: dict[str, list[Result]], cells: Callable[[Result], list[str]]
) -> str:
    rows = [(side, cells(median_result(runs)) if runs else ["-"] * len(columns)) for side, runs in results.items()]
    return table(title, columns, rows)


def timing_cells(r: Result) -> list[str]:
    return [fmt_rate(r.ops_per_s), fmt_ms(r.p50_ms), fmt_ms(r.p99_ms), str(r.extra["errors"])]


def median_of(runs: Sequence[Result], name: str) -> float:
    return statistics.median(float(r.extra[name]) for r in runs)  # type: ignore[arg-type]


def vm_mb(name: str) -> float:
    """VmRSS, VmHWM ... of this process, MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> float:
    """Reset this process's VmHWM to its current RSS (Linux: clear_refs 5); the RSS it starts from, MB."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return vm_mb("VmRSS")


class Ticker:
    """A task that sleeps 1 ms at a time and keeps how late it woke: the longest the event loop was held."""

    def __init__(self) -> None:
        self.worst_s = 0.0

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0.005)
        return self

    async def _tick(self) -> None:
        while True:
            began = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst_s = max(self.worst_s, time.perf_counter() - began - 0.001)

    async def __aexit__(self, *_exc: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def run_child(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run bench_vault.<name>(payload) in a new process; what it printed last, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(root=str(ROOT), name=name), json.dumps(payload)],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


# --- filling the databases -----------------------------------------------------------------------


def sides_in(directory: Path, seed_module: object | None) -> Sides:
    return Sides(directory, seed_module, key=SHARED_KEY)


def encrypted(keys_: Sequence[str], fernet: Fernet, chunk: int = 10_000) -> Iterator[list[tuple[str, str]]]:
    for start in range(0, len(keys_), chunk):
        yield [(key, fernet.encrypt(value_for(key, 0).encode()).decode()) for key in keys_[start : start + chunk]]


def fill_files(sides: Sides, keys_: Sequence[str], names: Sequence[str]) -> None:
    """The same rows, encrypted once, into each file by plain inserts: ours.db has our schema (Alembic's),
    seed.db the seed's own table, floor.db the seed's DDL."""
    if "seed.db" in names and sides.seed_module is not None:
        sides.seed_storage()
    connections = {name: sqlite3.connect(sides.directory / name) for name in names}
    if "floor.db" in connections:
        connections["floor.db"].execute("PRAGMA journal_mode=WAL")
        connections["floor.db"].execute(SEED_TABLE)
    try:
        for rows in encrypted(keys_, sides.fernet):
            for connection in connections.values():
                with connection:
                    connection.executemany(INSERT_ROW, rows)
    finally:
        for connection in connections.values():
            connection.close()


# --- PostgreSQL: the scratch database ------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    url: str  # for SQLAlchemy and the vault
    dsn: str  # for asyncpg
    about: str  # one line: server, database, durability settings

    def environ(self, sides: Sides) -> dict[str, str]:
        return {**sides.environ, "DATABASE_URL": self.url}

    def settings(self, sides: Sides) -> Settings:
        return Settings.from_environ(self.environ(sides), env_file=None)

    async def execute(self, *statements: str) -> None:
        connection = await asyncpg.connect(self.dsn)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    def reset(self) -> None:
        asyncio.run(self.execute("TRUNCATE tokens, accounts, token_changes, floor_tokens CASCADE"))


async def _admin(dsn: str, statement: str) -> str:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        await connection.execute(statement)
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


@contextlib.contextmanager
def scratch_postgres(admin_url: str) -> Iterator[Postgres | None]:
    """A database of this run's own on the server `admin_url` names, migrated; dropped on the way out.
    None (and one line saying so) when the server does not answer."""
    admin = make_url(admin_url).set(drivername="postgresql")
    admin_dsn = admin.render_as_string(hide_password=False)
    name = f"salesbot_bench_{os.getpid()}"
    try:
        version = asyncio.run(_admin(admin_dsn, f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        print(
            f"PostgreSQL at {admin.host}:{admin.port or 5432} did not answer ({type(error).__name__}): "
            "skipping workload 8 and the PostgreSQL halves of 9 and 11"
        )
        print()
        yield None
        return
    try:
        url = admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
        dsn = admin.set(database=name).render_as_string(hide_password=False)
        settings = Settings.from_environ(
            {"STATE_TOKEN_SECRET": SECRET, "TOKEN_ENCRYPTION_KEYS": SHARED_KEY, "DATABASE_URL": url}, env_file=None
        )
        migrate.upgrade(url, KeyRing.from_settings(settings))  # outside any event loop: Alembic runs its own
        durability = asyncio.run(_prepare(dsn))
        yield Postgres(url, dsn, f"PostgreSQL {version} at {admin.host}, scratch database {name} ({durability})")
    finally:
        asyncio.run(_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _prepare(dsn: str) -> str:
    """Make the floor's table; the server's durability settings, as one line."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(PG_FLOOR_TABLE)
        commit, fsync = [await connection.fetchval(f"SHOW {name}") for name in ("synchronous_commit", "fsync")]
        return f"synchronous_commit={commit}, fsync={fsync}"
    finally:
        await connection.close()


async def pg_fill(dsn: str, keys_: Sequence[str], fernet: Fernet) -> None:
    """The rows into our `tokens` and the floor's table, by COPY: written beforehand, not by the store."""
    connection = await asyncpg.connect(dsn)
    try:
        for rows in encrypted(keys_, fernet):
            for name in ("tokens", "floor_tokens"):
                records = [(key, value, "token") for key, value in rows]
                await connection.copy_records_to_table(name, records=records, columns=["key", "value", "type"])
        await connection.execute("ANALYZE tokens; ANALYZE floor_tokens")
    finally:
        await connection.close()


async def pg_durable(dsn: str, table_name: str, fernet: Fernet) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(f"SELECT key, value FROM {table_name}")
    finally:
        await connection.close()
    return sum(1 for key, value in rows if fernet.decrypt(value.encode()).decode() == value_for(key, 1))


# --- workload 6 (and 8's writes): one caller storing tokens one at a time ------------------------


def write_keys(count: int) -> list[str]:
    return [f"FACEBOOK_ACCESS_TOKEN_{n}" for n in range(count)]  # what count_durable reads back


async def ours_one_writer(settings: Settings, keys_: Sequence[str]) -> Result:
    async with TokenStore.open(settings) as store:
        async with store.engine.connect() as connection:  # the pragma only: token SQL stays in the vault
            if connection.dialect.name == "sqlite":
                found = (await connection.exec_driver_sql("PRAGMA synchronous")).scalar()
                durability = SYNC_NAMES.get(found, str(found))  # type: ignore[arg-type]
            else:
                found = (await connection.exec_driver_sql("SHOW synchronous_commit")).scalar()
                durability = f"synchronous_commit={found}"
        result = await one_caller(lambda key: store.store_token(key, value_for(key, 1)), keys_)
        result.extra.update(durability=durability, batches=store.stats["write_batches"])
    return result


def seed_one_writer(sides: Sides, keys_: Sequence[str], name: str = "seed.db") -> Result:
    seed = sides.seed_storage(name)
    result = plain_loop(lambda key: seed.store_token(key, value_for(key, 1)), keys_)  # type: ignore[attr-defined]
    synchronous = seed_synchronous(sides.directory / name)
    result.extra.update(durability=SYNC_NAMES.get(synchronous, str(synchronous)))
    return result


class FloorWriter:
    """The minimal design: one plain sqlite3 connection on one writer thread, one hop and one commit a write."""

    def __init__(self, path: Path, fernet: Fernet) -> None:
        self._connection = floor_connection(path)  # WAL, synchronous=FULL, autocommit (we BEGIN ourselves)
        self._thread = ThreadPoolExecutor(max_workers=1)
        self._fernet = fernet

    def _write(self, key: str, ciphertext: str) -> None:
        self._connection.execute("BEGIN IMMEDIATE")
        self._connection.execute(INSERT_ROW, (key, ciphertext))
        self._connection.execute("COMMIT")

    async def store_token(self, key: str, value: str) -> None:
        ciphertext = self._fernet.encrypt(value.encode()).decode()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._write, key, ciphertext)

    def close(self) -> str:
        """Closes it; the synchronous level it ran at."""
        self._thread.shutdown(wait=True)
        synchronous = self._connection.execute("PRAGMA synchronous").fetchone()[0]
        self._connection.close()
        return SYNC_NAMES.get(synchronous, str(synchronous))


async def floor_one_writer(sides: Sides, keys_: Sequence[str]) -> Result:
    writer = FloorWriter(sides.directory / "floor.db", sides.fernet)
    try:
        result = await one_caller(lambda key: writer.store_token(key, value_for(key, 1)), keys_)
    finally:
        durability = writer.close()
    result.extra.update(durability=durability)
    return result


async def pg_floor_one_writer(dsn: str, fernet: Fernet, keys_: Sequence[str]) -> Result:
    connection = await asyncpg.connect(dsn)
    try:
        upsert = await connection.prepare(PG_FLOOR_UPSERT)

        async def store_token(key: str) -> None:
            await upsert.fetch(key, fernet.encrypt(value_for(key, 1).encode()).decode())  # autocommit

        result = await one_caller(store_token, keys_)
        durability = f"synchronous_commit={await connection.fetchval('SHOW synchronous_commit')}"
    finally:
        await connection.close()
    result.extra.update(durability=durability)
    return result


def run_one_writer(args: Any, sizes: Sizes) -> dict[str, list[Result]]:
    results: dict[str, list[Result]] = {"ours": [], "seed": [], "floor": []}
    keys_ = write_keys(sizes.writes)

    def measure(side: str, sides: Sides) -> Result:
        if side == "ours":
            result = asyncio.run(ours_one_writer(sides.settings, keys_))
        elif side == "seed":
            result = seed_one_writer(sides, keys_)
        else:
            result = asyncio.run(floor_one_writer(sides, keys_))
        result.extra["durable"] = count_durable(sides.directory / f"{side}.db", sides.fernet, len(keys_))
        return result

    for number in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:  # fresh files every round
            sides = sides_in(Path(tmp), args.seed_module)
            fill_files(sides, [], ["floor.db"])
            for side in rotated(list(results), number):
                if side != "seed" or args.seed_module is not None:
                    results[side].append(measure(side, sides))
    return results


def write_cells(total: int) -> Callable[[Result], list[str]]:
    def cells(r: Result) -> list[str]:
        return [*timing_cells(r), str(r.extra["durability"]), f"{r.extra['durable']:,}/{total:,}"]

    return cells


WRITE_COLUMNS = ["ops/s", "p50 ms", "p99 ms", "errors", "durability", "read back, all rounds"]


def print_one_writer(results: dict[str, list[Result]], args: Any, sizes: Sizes) -> None:
    title = f"6. one writer: {sizes.writes:,} sequential store_token from one caller, SQLite"
    print(side_table(title, WRITE_COLUMNS, results, write_cells(sizes.writes * args.rounds)))
    print(compare(results, "ours", "seed", 1.2))
    print(compare(results, "ours", "floor", 0.85))
    batches = sum(int(r.extra["batches"]) for r in results["ours"])  # type: ignore[call-overload]
    print(f"ours committed in {batches:,} batches for {sizes.writes * args.rounds:,} writes (all rounds)")
    print()


# --- workload 7 (and 8's reads): one caller, cold reads ------------------------------------------


async def ours_cold_reads(settings: Settings, lookups: Sequence[str], cache_size: int) -> Result:
    async with TokenStore.open(settings, cache_size=cache_size) as store:
        result = await one_caller(store.get_token, lookups, right_value)
        result.extra.update(misses=store.stats["misses"], queries=store.stats["queries"])
    return result


async def pg_floor_reads(dsn: str, fernet: Fernet, lookups: Sequence[str]) -> Result:
    connection = await asyncpg.connect(dsn)
    try:
        select = await connection.prepare(PG_FLOOR_SELECT)

        async def get_token(key: str) -> str | None:
            value = await select.fetchval(key)
            return None if value is None else fernet.decrypt(value.encode()).decode()

        result = await one_caller(get_token, lookups, right_value)
    finally:
        await connection.close()
    return result


def seed_reads(sides: Sides, lookups: Sequence[str]) -> Result:
    return plain_loop(sides.seed_storage().get_token, lookups, right_value)  # type: ignore[attr-defined]


def run_cold_reads(args: Any, sizes: Sizes) -> dict[str, list[Result]]:
    results: dict[str, list[Result]] = {"ours": [], "seed": [], "floor": []}
    keys_ = token_keys(sizes.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        sides = sides_in(Path(tmp), args.seed_module)
        fill_files(sides, keys_, ["ours.db", "floor.db"] + (["seed.db"] if args.seed_module else []))
        floor_get, _put = floor_get_put(sides.directory / "floor.db", sides.fernet)

        def measure(side: str, lookups: list[str]) -> Result:
            if side == "ours":
                return asyncio.run(ours_cold_reads(sides.settings, lookups, sizes.cache))
            if side == "seed":
                return seed_reads(sides, lookups)
            return plain_loop(floor_get, lookups, right_value)

        for number in range(args.rounds):
            lookups = random.Random(number).choices(keys_, k=sizes.lookups)  # uniform
            for side in rotated(list(results), number):
                if side != "seed" or args.seed_module is not None:
                    results[side].append(measure(side, lookups))
    return results


def read_cells(lookups: int) -> Callable[[Result], list[str]]:
    def cells(r: Result) -> list[str]:
        misses = f"{int(r.extra['misses']) / lookups:.0%}" if "misses" in r.extra else "-"  # type: ignore[call-overload]
        return [*timing_cells(r), misses]

    return cells


READ_COLUMNS = ["ops/s", "p50 ms", "p99 ms", "errors", "cache misses"]


def print_cold_reads(results: dict[str, list[Result]], sizes: Sizes) -> None:
    title = (
        f"7. cold reads: {sizes.lookups:,} get_token of uniform keys over {sizes.tokens:,} tokens, one caller, "
        f"our cache {sizes.cache:,} entries, SQLite"
    )
    print(side_table(title, READ_COLUMNS, results, read_cells(sizes.lookups)))
    print(compare(results, "ours", "seed", 5))
    print(compare(results, "ours", "floor"))
    print()


# --- workload 8: the same on PostgreSQL ------------------------------------------------------------


OURS_PG, SEED_SQLITE, FLOOR_PG = "ours (PostgreSQL)", "seed (SQLite)", "floor (PostgreSQL)"


def run_postgres(args: Any, sizes: Sizes, postgres: Postgres) -> tuple[dict[str, list[Result]], ...]:
    """6 and 7 again: ours and the floor on PostgreSQL, the seed on SQLite, interleaved in every round."""
    sides_names = [OURS_PG, SEED_SQLITE, FLOOR_PG]
    if args.seed_module is None:
        sides_names.remove(SEED_SQLITE)
    writes: dict[str, list[Result]] = {OURS_PG: [], SEED_SQLITE: [], FLOOR_PG: []}
    reads: dict[str, list[Result]] = {OURS_PG: [], SEED_SQLITE: [], FLOOR_PG: []}
    write_keys_, read_keys = write_keys(sizes.writes), token_keys(sizes.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        sides = sides_in(Path(tmp), args.seed_module)
        settings = postgres.settings(sides)

        def write(side: str, number: int) -> Result:
            if side == SEED_SQLITE:
                name = f"seed-writes-{number}.db"  # a new file every round
                result = seed_one_writer(sides, write_keys_, name)
                result.extra["durable"] = count_durable(sides.directory / name, sides.fernet, len(write_keys_))
                return result
            if side == OURS_PG:
                result = asyncio.run(ours_one_writer(settings, write_keys_))
            else:
                result = asyncio.run(pg_floor_one_writer(postgres.dsn, sides.fernet, write_keys_))
            table_name = "tokens" if side == OURS_PG else "floor_tokens"
            result.extra["durable"] = asyncio.run(pg_durable(postgres.dsn, table_name, sides.fernet))
            return result

        for number in range(args.rounds):
            postgres.reset()
            for side in rotated(sides_names, number):
                writes[side].append(write(side, number))

        def read(side: str, lookups: list[str]) -> Result:
            if side == OURS_PG:
                return asyncio.run(ours_cold_reads(settings, lookups, sizes.cache))
            if side == SEED_SQLITE:
                return seed_reads(sides, lookups)
            return asyncio.run(pg_floor_reads(postgres.dsn, sides.fernet, lookups))

        postgres.reset()
        asyncio.run(pg_fill(postgres.dsn, read_keys, sides.fernet))
        if args.seed_module is not None:
            fill_files(sides, read_keys, ["seed.db"])
        for number in range(args.rounds):
            lookups = random.Random(number).choices(read_keys, k=sizes.lookups)
            for side in rotated(sides_names, number):
                reads[side].append(read(side, lookups))
    return writes, reads


def print_postgres(
    writes: dict[str, list[Result]], reads: dict[str, list[Result]], args: Any, sizes: Sizes, postgres: Postgres
) -> None:
    ours, seed, floor = OURS_PG, SEED_SQLITE, FLOOR_PG
    print(postgres.about)
    title = f"8a. one writer on PostgreSQL: {sizes.writes:,} sequential store_token from one caller"
    print(side_table(title, WRITE_COLUMNS, writes, write_cells(sizes.writes * args.rounds)))
    print(compare(writes, ours, seed, 0.8))
    print(compare(writes, ours, floor, 0.7))
    print()
    title = (
        f"8b. cold reads on PostgreSQL: {sizes.lookups:,} get_token of uniform keys over {sizes.tokens:,} tokens, "
        f"one caller, our cache {sizes.cache:,} entries"
    )
    print(side_table(title, READ_COLUMNS, reads, read_cells(sizes.lookups)))
    print(compare(reads, ours, floor, 0.7))
    print(compare(reads, ours, seed))
    print("floor (PostgreSQL): table floor_tokens (LIKE tokens INCLUDING ALL, no trigger) in the same database")
    print()


# --- workload 9: freshness across processes ------------------------------------------------------


def deleter(environ: dict[str, str]) -> None:
    """Process A: delete each key read from stdin; print time.monotonic() as each delete returns."""

    async def main() -> None:
        async with TokenStore.open(Settings.from_environ(environ, env_file=None)) as store:
            print("ready", flush=True)
            loop = asyncio.get_running_loop()
            while key := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
                await store.delete_token(key)
                print(time.monotonic(), flush=True)

    asyncio.run(main())


@dataclass
class Freshness:
    stale: int = 0  # reads that began after A's delete returned and still got the token
    late_stale: int = 0  # of those, begun more than 100 ms after
    never_dropped: int = 0  # still served GIVE_UP_S after the delete returned
    reads: int = 0
    delays_ms: list[float] = field(default_factory=list)  # A's return to B's first miss, one per delete
    shell_seen: str = "-"


async def chase_deletes(
    environ: dict[str, str], count: int, shell: int, path: Path | None, fernet: Fernet
) -> Freshness:
    """Process B: cache the keys, have A delete them one by one, read each in a loop until it misses."""
    settings = Settings.from_environ(environ, env_file=None)
    doomed = [f"FACEBOOK_ACCESS_TOKEN_fresh{n}" for n in range(count)]
    found = Freshness()
    async with TokenStore.open(settings) as store:
        await store.store_tokens([TokenWrite(key, value_for(key, 0)) for key in doomed])
        for key in doomed:
            assert await store.get_token(key) == value_for(key, 0)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD.format(root=str(ROOT), name="deleter"),
            json.dumps(environ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            assert (await process.stdout.readline()).strip() == b"ready"
            for key in doomed:
                process.stdin.write(key.encode() + b"\n")
                await process.stdin.drain()
                reply = asyncio.ensure_future(process.stdout.readline())
                reads: list[tuple[float, bool]] = []  # (when it began, whether it still got the token)
                while True:
                    began = time.monotonic()
                    served = await store.get_token(key) is not None
                    reads.append((began, served))
                    if reply.done() and (not served or began - float(reply.result()) > GIVE_UP_S):
                        break
                    await asyncio.sleep(0)  # let A's answer (and PostgreSQL's notification) in
                returned = float(reply.result())
                after = [began - returned for began, served in reads if served and began > returned]
                found.stale += len(after)
                found.late_stale += sum(1 for lag in after if lag > 0.1)
                found.reads += len(reads)
                first_miss = next((began for began, served in reads if not served), None)
                if first_miss is None:
                    found.never_dropped += 1
                    first_miss = reads[-1][0]
                found.delays_ms.append(max(0.0, first_miss - returned) * 1000)
        finally:
            process.stdin.close()
            await process.wait()
        if path is not None:
            found.shell_seen = await shell_changes_seen(store, path, fernet, shell)
    return found


async def shell_changes_seen(store: TokenStore, path: Path, fernet: Fernet, count: int) -> str:
    """Rows changed with the sqlite3 module directly, as the sqlite3 shell would: does the next read see them?"""
    changed = [f"FACEBOOK_ACCESS_TOKEN_shell{n}" for n in range(count)]
    await store.store_tokens([TokenWrite(key, value_for(key, 0)) for key in changed])
    seen = 0
    for key in changed:
        assert await store.get_token(key) == value_for(key, 0)  # cached
        connection = sqlite3.connect(path)
        with connection:
            ciphertext = fernet.encrypt(value_for(key, 1).encode()).decode()
            connection.execute("UPDATE tokens SET value = ? WHERE key = ?", (ciphertext, key))
        connection.close()
        seen += await store.get_token(key) == value_for(key, 1)
    return f"{'yes' if seen == count else 'NO'} ({seen}/{count})"


def run_freshness(args: Any, sizes: Sizes, postgres: Postgres | None) -> dict[str, list[Freshness]]:
    results: dict[str, list[Freshness]] = {"SQLite": [], "PostgreSQL": []}
    for number in range(args.rounds):
        for backend in rotated(list(results), number):
            with tempfile.TemporaryDirectory() as tmp:
                sides = sides_in(Path(tmp), None)
                if backend == "SQLite":
                    run = chase_deletes(
                        sides.environ, sizes.deletes, sizes.shell_changes, sides.directory / "ours.db", sides.fernet
                    )
                elif postgres is not None:
                    postgres.reset()
                    run = chase_deletes(postgres.environ(sides), sizes.deletes, 0, None, sides.fernet)
                else:
                    continue
                results[backend].append(asyncio.run(run))
    return results


def print_freshness(results: dict[str, list[Freshness]], sizes: Sizes) -> None:
    rows = []
    for backend, runs in results.items():
        if not runs:
            rows.append((f"ours, {backend}", ["-"] * 7))
            continue
        p50 = statistics.median(percentile(run.delays_ms, 0.50) for run in runs)
        p99 = statistics.median(percentile(run.delays_ms, 0.99) for run in runs)
        cells = [
            str(sum(run.stale for run in runs)),
            str(sum(run.late_stale for run in runs)),
            str(sum(run.never_dropped for run in runs)),
            fmt_ms(p50),
            fmt_ms(p99),
            f"{sum(run.reads for run in runs):,}",
            runs[-1].shell_seen,
        ]
        rows.append((f"ours, {backend}", cells))
    title = (
        f"9. freshness across processes: {sizes.deletes:,} deletes a round by process A, process B (key cached) "
        "reading in a loop; counts are totals over all rounds"
    )
    columns = [
        "stale reads",
        "stale > 100 ms",
        "never dropped",
        "delay p50 ms",
        "delay p99 ms",
        "reads",
        "sqlite3 change seen",
    ]
    print(table(title, columns, rows))
    for backend, runs in results.items():
        if not runs:
            continue
        stale = sum(run.stale for run in runs)
        late = sum(run.late_stale for run in runs)
        if backend == "SQLite":
            print(
                f"SQLite: {stale} reads began after A's delete returned and still got the token "
                f"(target 0: {'met' if stale == 0 else 'NOT MET'}); a change by the sqlite3 module seen by the "
                f"next read: {runs[-1].shell_seen}"
            )
        else:
            p99 = statistics.median(percentile(run.delays_ms, 0.99) for run in runs)
            print(
                f"PostgreSQL: delay p99 {p99:.1f} ms (target < 50 ms: {'met' if p99 < 50 else 'NOT MET'}); "
                f"{late} stale reads begun > 100 ms after the delete returned (target 0: "
                f"{'met' if late == 0 else 'NOT MET'})"
            )
    print()


# --- workload 10: a big listing --------------------------------------------------------------------


def listing_child(payload: dict[str, Any]) -> None:
    """In a process of its own: one listing, its time, the event loop's worst lag, its peak RSS growth."""
    if payload["side"] == "seed":
        os.environ["STATE_TOKEN_SECRET"] = SECRET
        seed = load_seed_module(Path(payload["seed_dir"])).TokenStorage(db_path=payload["path"])
        baseline = reset_peak_rss()
        started = time.perf_counter()
        rows = len(seed.get_all_tokens_by_type("token"))
        seconds = time.perf_counter() - started
        found = {"seconds": seconds, "rows": rows, "stall_ms": seconds * 1000}  # synchronous: all of it
    else:
        found = asyncio.run(_ours_listing(payload["environ"], payload["side"]))
        baseline = found.pop("baseline")
    print(json.dumps({**found, "rss_mb": vm_mb("VmHWM") - baseline}))


async def _ours_listing(environ: dict[str, str], how: str) -> dict[str, float]:
    async with TokenStore.open(Settings.from_environ(environ, env_file=None)) as store:
        async with Ticker() as ticker:
            baseline = reset_peak_rss()
            started = time.perf_counter()
            if how == "get_all_tokens_by_type":
                rows = len(await store.get_all_tokens_by_type("token"))
            else:
                rows = 0
                async for _key, _value in store.iter_tokens_by_type("token"):
                    rows += 1
            seconds = time.perf_counter() - started
        return {"seconds": seconds, "rows": rows, "stall_ms": ticker.worst_s * 1000, "baseline": baseline}


def run_listing(args: Any, sizes: Sizes) -> dict[str, list[Result]]:
    sides_names = ["ours get_all_tokens_by_type", "ours iter_tokens_by_type", "seed get_all_tokens_by_type"]
    results: dict[str, list[Result]] = {name: [] for name in sides_names}
    with tempfile.TemporaryDirectory() as tmp:
        sides = sides_in(Path(tmp), args.seed_module)
        fill_files(sides, token_keys(sizes.listing), ["ours.db"] + (["seed.db"] if args.seed_module else []))
        for number in range(args.rounds):
            for name in rotated(sides_names, number):
                side, how = name.split()[0], name.split()[1]
                if side == "seed" and args.seed_module is None:
                    continue
                payload = {
                    "side": how if side == "ours" else "seed",
                    "environ": sides.environ,
                    "seed_dir": str(args.seed),
                    "path": str(sides.directory / "seed.db"),
                }
                found = run_child("listing_child", payload)
                results[name].append(Result(found["rows"] / found["seconds"], extra=found))
    return results


def print_listing(results: dict[str, list[Result]], sizes: Sizes) -> None:
    rows = []
    for name, runs in results.items():
        if not runs:
            rows.append((name, ["-"] * 4))
            continue
        seconds, stall, rss = (median_of(runs, field) for field in ("seconds", "stall_ms", "rss_mb"))
        stall_cell = f"{stall:,.1f}" + (" (sync)" if name.startswith("seed") else "")
        rows.append((name, [f"{seconds:.1f}", f"{int(runs[-1].extra['rows']):,}", stall_cell, f"{rss:,.0f}"]))  # type: ignore[call-overload]
    print(
        table(
            f"10. listing: {sizes.listing:,} tokens of one type, each side in a process of its own",
            ["seconds", "rows", "longest loop stall ms", "peak RSS growth MB"],
            rows,
        )
    )
    get_all, iterate, seed = results.values()
    stall = median_of(get_all, "stall_ms")
    iter_stall, iter_rss = median_of(iterate, "stall_ms"), median_of(iterate, "rss_mb")
    print(
        f"ours get_all_tokens_by_type: longest stall {stall:.1f} ms (target < 50 ms: "
        f"{'met' if stall < 50 else 'NOT MET'}); iter_tokens_by_type: {iter_stall:.1f} ms, peak RSS growth "
        f"{iter_rss:.0f} MB (target < 100 MB: {'met' if iter_rss < 100 else 'NOT MET'})"
    )
    if seed:
        ratio = median_of(seed, "seconds") / median_of(get_all, "seconds")
        per_round = " ".join(
            f"{float(s.extra['seconds']) / float(o.extra['seconds']):.2f}"  # type: ignore[arg-type]
            for o, s in zip(get_all, seed, strict=True)
        )
        print(
            f"ours get_all / seed get_all: {ratio:.2f}x the seed's speed ({'ours' if ratio >= 1 else 'seed'} "
            f"ahead; each round: {per_round})"
        )
    else:
        print("ours get_all / seed get_all: - (no seed chapter)")
    print()


# --- workload 11: Shopify tokens ---------------------------------------------------------------------


async def shopify_calls(settings: Settings, calls: int, rounds: int) -> dict[str, list[Result]]:
    key = keys.shopify_token_key("bench-shop")
    value = "shpat_" + "0123456789abcdef" * 2
    results: dict[str, list[Result]] = {name: [] for name in METHODS_11}
    async with TokenStore.open(settings) as store:
        account = await store.create_account()
        await store.store_token(
            key,
            value,
            expires_at=utcnow() + timedelta(hours=1),
            refresh_token="shprt_" + "fedcba9876543210" * 2,
            account_uuid=account,
        )
        await store.store_token(keys.page_uuid_key(PAGE), account, type="uuid")
        await store.store_token(keys.page_token_key(PAGE), "EAAP" + "0123456789" * 12)
        # All warm, and all the same token.
        assert await store.get_token(key) == value and await store.get_shopify_token(SHOP) == value
        page = await store.page_connection(PAGE)
        shop = await store.shop_connection(SHOP)
        assert page is not None and page.shop == SHOP and shop is not None and shop.token == value
        methods = {
            "get_token": functools.partial(store.get_token, key),
            "get_shopify_token": functools.partial(store.get_shopify_token, SHOP),
            "page_connection": functools.partial(store.page_connection, PAGE),
            "shop_connection": functools.partial(store.shop_connection, SHOP),
        }
        for number in range(rounds):
            for name in rotated(list(methods), number):
                call = methods[name]
                started = time.perf_counter()
                for _ in range(calls):
                    await call()
                results[name].append(Result(calls / (time.perf_counter() - started)))
    return results


def run_shopify(args: Any, sizes: Sizes, postgres: Postgres | None) -> dict[str, dict[str, list[Result]]]:
    found: dict[str, dict[str, list[Result]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sides = sides_in(Path(tmp), None)
        found["SQLite"] = asyncio.run(shopify_calls(sides.settings, sizes.calls, args.rounds))
        if postgres is not None:
            postgres.reset()
            found["PostgreSQL"] = asyncio.run(shopify_calls(postgres.settings(sides), sizes.calls, args.rounds))
    return found


def print_shopify(found: dict[str, dict[str, list[Result]]], sizes: Sizes) -> None:
    rows = []
    for method in METHODS_11:
        cells = []
        for backend in ("SQLite", "PostgreSQL"):
            runs = found.get(backend, {}).get(method)
            rate = median_result(runs).ops_per_s if runs else None
            cells += [fmt_rate(rate), "-" if rate is None else f"{1e6 / rate:.2f}"]
        rows.append((method, cells))
    print(
        table(
            f"11. Shopify token not due for refresh, and the bot's connections: {sizes.calls:,} warm calls a round",
            ["SQLite ops/s", "µs/call", "PostgreSQL ops/s", "µs/call"],
            rows,
        )
    )
    for backend, results in found.items():
        base = median_result(results["get_token"]).ops_per_s
        for method, target in TARGETS_11.items():
            cost = base / median_result(results[method]).ops_per_s
            print(
                f"{backend}: {method} costs {cost:.2f}x get_token (target within {target:g}x: "
                f"{'met' if cost <= target else 'NOT MET'})"
            )
    print()


# --- from bench.py's main ------------------------------------------------------------------------------


def run(wanted: set[int], args: Any) -> None:
    sizes = sizes_for(args)
    print(
        f"scripts/bench_vault.py: writes={sizes.writes:,} tokens={sizes.tokens:,} lookups={sizes.lookups:,} "
        f"cache={sizes.cache:,} deletes={sizes.deletes:,} listing={sizes.listing:,} calls={sizes.calls:,}"
    )
    print()
    needs_postgres = bool(wanted & {8, 9, 11})
    with scratch_postgres(args.postgres) if needs_postgres else contextlib.nullcontext() as postgres:
        if 6 in wanted:
            print_one_writer(run_one_writer(args, sizes), args, sizes)
        if 7 in wanted:
            print_cold_reads(run_cold_reads(args, sizes), sizes)
        if 8 in wanted and postgres is not None:
            print_postgres(*run_postgres(args, sizes, postgres), args, sizes, postgres)
        if 9 in wanted:
            print_freshness(run_freshness(args, sizes, postgres), sizes)
        if 10 in wanted:
            print_listing(run_listing(args, sizes), sizes)
        if 11 in wanted:
            print_shopify(run_shopify(args, sizes, postgres), sizes)
