from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from service.settings import Settings
from service.store import TokenStore

ONLY_BACKENDS = ["sqlite"]


async def test_every_connection_gets_the_pragmas(store: TokenStore) -> None:
    async with store.engine.connect() as connection:
        values = {
            name: (await connection.execute(text(f"PRAGMA {name}"))).scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
        }
    assert values == {"journal_mode": "wal", "busy_timeout": 10000, "foreign_keys": 1, "synchronous": 2}


async def test_files_are_private(store: TokenStore, migrated: Settings) -> None:
    path = Path(store.engine.url.database)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_write_transactions_take_the_lock_at_begin(store: TokenStore) -> None:
    path = store.engine.url.database
    async with store.write_transaction():
        # No statement has run yet in our transaction; an IMMEDIATE begin already holds the write lock.
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")
    other.close()


async def test_foreign_keys_are_enforced(store: TokenStore) -> None:
    with pytest.raises(Exception, match="FOREIGN KEY"):
        async with store.engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO tokens (key, value, type, account_uuid) VALUES ('K', 'v', 'token', 'no-such')")
            )
