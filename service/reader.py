"""Cache misses on SQLite, read on a plain sqlite3 connection in one thread of its own.

Through SQLAlchemy and aiosqlite, a batch of cache misses costs a pool checkout, statement
compilation and several hops to the driver's thread; here it is one hop: the thread runs the
`WHERE key IN (...)` query and hands the rows (and whatever the caller wants done with them, such
as decryption) back at once. The connection only reads (query_only), in autocommit, so each query
sees every commit made before it began; writes keep going through SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from service.db import BUSY_TIMEOUT_MS

T = TypeVar("T")
SQLITE_MAX_VARIABLES = 999  # the lowest limit any SQLite build has; the cache asks for fewer keys


class SQLiteReader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salesbot-reader")
        self._connection: sqlite3.Connection | None = None

    async def run(self, then: Callable[[list[str], list[tuple[str, str]]], T], keys: list[str]) -> T:
        """Read the ciphertexts of `keys` and return then(keys, rows), all in the reader's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._read, then, keys)

    async def call(self, function: Callable[[], T]) -> T:
        """Run `function` in the reader's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    def _read(self, then: Callable[[list[str], list[tuple[str, str]]], T], keys: list[str]) -> T:
        connection = self._connection or self._connect()
        rows: list[tuple[str, str]] = []
        for start in range(0, len(keys), SQLITE_MAX_VARIABLES):
            chunk: Sequence[str] = keys[start : start + SQLITE_MAX_VARIABLES]
            rows += connection.execute(
                f"SELECT key, value FROM tokens WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
        return then(keys, rows)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        connection.execute("PRAGMA query_only=ON")
        self._connection = connection
        return connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)
