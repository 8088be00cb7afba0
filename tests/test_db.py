from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from service.settings import Settings
from service.vault import TokenStore
from service.vault.planner import Plan
from service.vault.writes import ReadWrite

ONLY_BACKENDS = ["sqlite"]


PRAGMAS = ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
EXPECTED = {"journal_mode": "wal", "busy_timeout": 10000, "foreign_keys": 1, "synchronous": 2}


async def test_every_connection_gets_the_pragmas(store: TokenStore) -> None:
    async with store.engine.connect() as connection:
        values = {name: (await connection.execute(text(f"PRAGMA {name}"))).scalar() for name in PRAGMAS}
    assert values == EXPECTED

    def in_the_writer(connection: Connection) -> dict[str, object]:
        return {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar() for name in PRAGMAS}

    assert await store.run_write(in_the_writer) == EXPECTED  # the connection every write goes through


async def test_files_are_private(store: TokenStore, migrated: Settings) -> None:
    path = Path(store.engine.url.database)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def another_writer_is_locked_out(path: str) -> bool:
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        return "locked" in str(error)
    else:
        other.execute("ROLLBACK")
        return False
    finally:
        other.close()


async def test_write_transactions_take_the_lock_at_begin(store: TokenStore) -> None:
    # Inside the writer's transaction, before it writes anything, another writer is already locked out.
    path = store.engine.url.database
    assert path is not None

    def job(_connection: Connection) -> bool:  # a job on the service's other tables
        return another_writer_is_locked_out(path)

    def decide(_found: list) -> tuple[Plan, bool]:  # a vault read-then-write, after its reads
        return Plan(), another_writer_is_locked_out(path)

    assert await store.run_write(job) is True
    decided = await store.read_write(ReadWrite([("SELECT 1", {})], decide))
    assert decided.result is True
    assert another_writer_is_locked_out(path) is False  # and the lock is released at commit


async def test_foreign_keys_are_enforced(store: TokenStore) -> None:
    with pytest.raises(Exception, match="FOREIGN KEY"):
        async with store.engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO tokens (key, value, type, account_uuid) VALUES ('K', 'v', 'token', 'no-such')")
            )
