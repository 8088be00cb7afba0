"""What a database holds before the vault opens it: do stored values open with a given key?

Asked at start-up (service/security.py, the weak-secret check) of a database that may not be migrated
yet, so it reads the file or the server directly and treats a missing `tokens` table as empty.
"""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
from cryptography.fernet import Fernet, InvalidToken

from service.db import sqlite_file
from service.vault.postgres import asyncpg_dsn

VALUES = "SELECT value FROM tokens"


def _opens(fernet: Fernet, value: object) -> bool:
    try:
        fernet.decrypt(str(value).encode())
    except InvalidToken:
        return False
    return True


def values_under(database_url: str, key: bytes) -> bool:
    """Does any stored value open with `key` (a Fernet key)? Stops at the first that does."""
    fernet = Fernet(key)
    path = sqlite_file(database_url)
    if path is None:
        return asyncio.run(_postgres_values_under(database_url, fernet))
    if not path.is_file():
        return False
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return any(_opens(fernet, value) for (value,) in connection.execute(VALUES))
    except sqlite3.OperationalError:  # no tokens table yet
        return False
    finally:
        connection.close()


async def _postgres_values_under(database_url: str, fernet: Fernet) -> bool:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        if await connection.fetchval("SELECT to_regclass('tokens')") is None:
            return False
        async with connection.transaction():  # a server-side cursor: rows arrive in batches
            async for record in connection.cursor(VALUES):
                if _opens(fernet, record[0]):
                    return True
        return False
    finally:
        await connection.close()
