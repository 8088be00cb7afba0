"""Engine factory: SQLite in WAL with the pragmas it needs, or PostgreSQL, with the key ring attached;
and the one-sentence account of a database that cannot be reached (DESIGN.md, "SQLite, and past one machine").

SQLite notes, because they decide whether concurrent writers work at all:
- pysqlite (under aiosqlite too) starts transactions lazily and only before DML, so we switch its own
  BEGIN off and emit ours from the `begin` event: DEFERRED for reads, IMMEDIATE for writes.
- A WAL transaction that reads and then tries to write gets SQLITE_BUSY at once when another
  connection committed in between, and busy_timeout does not help with that. BEGIN IMMEDIATE takes
  the write lock up front, so a second writer (another process) waits in busy_timeout instead.
- synchronous=FULL: the WAL is fsynced at every commit. Shopify refresh tokens are single-use, so a
  rotated pair lost to a power cut would disconnect the shop for good; NORMAL would allow that.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any, NoReturn

import sqlalchemy
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import SingletonThreadPool

from service.crypto import KeyRing, attach_keyring
from service.errors import DatabaseMissing, DatabaseUnavailable

BUSY_TIMEOUT_MS = 10_000
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=FULL",
)
# Memory-mapped reads for the vault's own SQLite connections: address space, not memory.
MMAP_BYTES = 256 * 1024 * 1024
# Execution option that marks a connection's transactions as writes (BEGIN IMMEDIATE on SQLite).
WRITE_OPTION = "salesbot_write"


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_file(url: str | URL) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def prepare_sqlite_file(path: Path) -> None:
    """Create the data directory 0700 and the database file 0600 before SQLite does it with umask bits,
    and put the file in WAL mode once, before any engine connects.

    Switching to WAL needs SQLite's exclusive lock, which it refuses at once, without waiting in
    busy_timeout, while another process is inside a transaction: two deploys migrating a new file at
    the same moment met `database is locked`. So the switch happens here, under a lock of our own (flock
    on the data directory; SQLite's own locks are fcntl() locks on the file and do not interact), and the
    per-connection `PRAGMA journal_mode=WAL` later finds it done."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        if not path.exists():
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)  # nothing has the new file open yet, so this close cannot drop SQLite's locks
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
    finally:
        fcntl.flock(directory, fcntl.LOCK_UN)
        os.close(directory)


def require_sqlite_file(path: Path) -> None:
    """Opening never creates a database: a typo in TOKEN_DB_PATH must not become an empty file."""
    if not path.exists():
        raise DatabaseMissing(
            f"There is no database at {path}: run `salesbot migrate` to create it, or check TOKEN_DB_PATH "
            "and DATABASE_URL."
        )


def create_engine(
    url: str, *, keyring: KeyRing | None = None, pool_size: int | None = None, create: bool = False
) -> AsyncEngine:
    """An engine on the database; a SQLite file that does not exist is refused (DatabaseMissing) unless
    `create` (migrations), which makes it with the right modes first."""
    kwargs: dict[str, Any] = {}
    path = sqlite_file(url)
    if path is not None:
        if not create:
            require_sqlite_file(path)
        try:
            prepare_sqlite_file(path)
        except OSError as error:
            raise DatabaseUnavailable(_file_problem(path, error)) from None
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_MS / 1000}
    else:
        # A pooled connection the server dropped (a restart, pg_terminate_backend) is found at checkout
        # and replaced, so the first request after a drop succeeds instead of failing on a dead socket.
        kwargs["pool_pre_ping"] = True
        if pool_size is not None:
            kwargs["pool_size"] = pool_size
    # hide_parameters: SQLAlchemy puts bound parameters (tokens, ciphertexts) into its exception
    # messages by default; those messages reach logs.
    engine = create_async_engine(url, hide_parameters=True, **kwargs)
    if is_sqlite(url):
        _install_sqlite_hooks(engine.sync_engine)
    if keyring is not None:
        attach_keyring(engine, keyring)
    return engine


def create_sqlite_writer(path: Path, keyring: KeyRing) -> Engine:
    """A synchronous engine on the same file, same pragmas and keys, for TokenStore's writer and reader threads."""
    engine = sqlalchemy.create_engine(
        f"sqlite:///{path}",
        hide_parameters=True,
        poolclass=SingletonThreadPool,  # a connection per thread that uses it: the writer, the reader
        # dispose() runs in the writer's thread and closes the reader's connection too.
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    _install_sqlite_hooks(engine)

    @event.listens_for(engine, "connect")
    def _memory_mapped(dbapi_connection: Any, _record: Any) -> None:
        # The upsert's look-ups (the key, the UUID entry) read pages through a map, not a read() each.
        dbapi_connection.execute(f"PRAGMA mmap_size={MMAP_BYTES}")

    attach_keyring(engine, keyring)
    return engine


def _install_sqlite_hooks(sync_engine: Engine) -> None:
    # Registered on the sync engine: under aiosqlite the DBAPI connection is SQLAlchemy's adapter,
    # whose cursor runs statements through the driver's thread for us.
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


async def write_connection(engine: AsyncEngine) -> AsyncConnection:
    """A connection whose transactions take the write lock when they begin (SQLite) -- use with begin()."""
    connection = await engine.connect()
    return await connection.execution_options(**{WRITE_OPTION: True})


# --- the database going away ------------------------------------------------------------------------

# SQLSTATE classes and codes that mean "no usable connection", not "this statement is wrong":
# 08 connection exceptions, 53 too many connections / out of resources, 57P01-57P03 shutdown or
# starting up; 3D000 the database does not exist, 55000 it is not accepting connections.
_UNAVAILABLE_CLASSES = ("08", "53", "57P")
_UNAVAILABLE_CODES = {"3D000", "55000"}
# "database is locked": another connection held the write lock for longer than busy_timeout.
_SQLITE_UNAVAILABLE = ("unable to open database file", "disk i/o error", "readonly database", "database is locked")


def _sqlstate(error: BaseException) -> str | None:
    original = getattr(error, "orig", None) or error
    return getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)


def is_unavailable(error: BaseException) -> bool:
    """True when `error` says the database cannot be reached or used at all (answer 503, retry later).
    Covers SQLAlchemy's errors and the drivers' own (the vault runs sqlite3 and asyncpg directly)."""
    if isinstance(error, DatabaseUnavailable | OSError):  # OSError: refused, reset, timed out, unresolvable
        return True
    if isinstance(error, exc.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(error, sqlite3.OperationalError):
        return any(text in str(error).lower() for text in _SQLITE_UNAVAILABLE)
    state = getattr(error, "sqlstate", None)  # asyncpg's PostgresError
    if isinstance(state, str):
        return state in _UNAVAILABLE_CODES or state.startswith(_UNAVAILABLE_CLASSES)
    if type(error).__module__.startswith("asyncpg") and "connection" in str(error).lower():
        return True  # asyncpg's InterfaceError: "connection is closed", "cannot ... connection was lost"
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, exc.InterfaceError):
            return True
        state = _sqlstate(error)
        if state is not None:
            return state in _UNAVAILABLE_CODES or state.startswith(_UNAVAILABLE_CLASSES)
        return any(text in str(error.orig).lower() for text in _SQLITE_UNAVAILABLE)
    return False


def unavailable(error: BaseException, database_url: str | None = None) -> DatabaseUnavailable | None:
    """The DatabaseUnavailable to raise in place of `error` (a driver's or SQLAlchemy's exception that says
    the database cannot be reached), or None. Its message names the exception's class, or with the URL
    the host and port (describe_database_error): never the driver's text, which can carry a statement."""
    if isinstance(error, DatabaseUnavailable) or not isinstance(error, Exception) or not is_unavailable(error):
        return None
    described = describe_database_error(error, database_url) if database_url is not None else None
    return DatabaseUnavailable(
        described or f"The database is not answering ({type(error).__name__}); try again in a moment."
    )


def raise_database_error(error: Exception) -> NoReturn:
    """Raise DatabaseUnavailable in place of `error` when it says the database cannot be reached, else `error`."""
    failure = unavailable(error)
    if failure is None:
        raise error
    raise failure from None


class _DatabaseErrors:
    """`with DATABASE_ERRORS:` raises DatabaseUnavailable in place of an error that says the database
    cannot be reached; anything else passes through untouched."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _trace: Any) -> bool:
        failure = None if error is None else unavailable(error)
        if failure is not None:
            raise failure from None
        return False


DATABASE_ERRORS = _DatabaseErrors()


def _where(url: str | URL) -> str:
    # Host, port and database name only: the URL's password never reaches a message.
    parsed = make_url(url)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def _file_problem(path: Path, error: OSError) -> str:
    reason = error.strerror or type(error).__name__
    return f"Cannot create or open the SQLite database {path} ({reason}): check TOKEN_DB_PATH or DATABASE_URL."


def describe_database_error(error: BaseException, url: str | URL) -> str | None:
    """One sentence for an operator: what is wrong with the database and what to check; None when
    `error` is not about reaching the database. Never includes the URL's password or a statement."""
    if isinstance(error, DatabaseUnavailable):
        return error.message
    path = sqlite_file(url)
    if path is not None:
        if isinstance(error, OSError):
            return _file_problem(path, error)
        if isinstance(error, exc.DBAPIError) and is_unavailable(error):
            return f"Cannot open the SQLite database {path} ({error.orig}): check TOKEN_DB_PATH and its directory."
        return None
    parsed = make_url(url)
    where = _where(url)
    if isinstance(error, socket.gaierror):
        return f"Cannot resolve the database host {parsed.host!r}: check DATABASE_URL."
    if isinstance(error, ConnectionRefusedError):
        return f"Cannot connect to the database at {where} (connection refused): is PostgreSQL running there?"
    if isinstance(error, TimeoutError):
        return f"The database at {where} did not answer in time."
    if isinstance(error, OSError):
        return f"Cannot connect to the database at {where} ({error.strerror or type(error).__name__})."
    if not isinstance(error, exc.DBAPIError):
        return None
    state = _sqlstate(error)
    if state == "3D000":
        return (
            f"The database {parsed.database!r} does not exist on {where}: create it "
            f"(createdb {parsed.database}) or fix DATABASE_URL."
        )
    if state in ("28P01", "28000"):
        return f"The database at {where} refused the login of {parsed.username!r}: check DATABASE_URL."
    if is_unavailable(error):
        return f"The database at {where} is not accepting connections (SQLSTATE {state or 'unknown'})."
    return None
