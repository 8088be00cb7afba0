"""The vault's statements on a tokens table in a database file that is not the open store: a backup's
copy being checked, a tokens.db being imported (service/jobs). The jobs hand over a plain sqlite3
connection to that file; what they ask of its tokens table is spelt here, so SQL on `tokens` lives in
the vault alone (DESIGN.md, "The vault")."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any


def has_tokens_table(connection: sqlite3.Connection) -> bool:
    tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return "tokens" in tables


def token_columns(connection: sqlite3.Connection) -> set[str]:
    return {row[1] for row in connection.execute("PRAGMA table_info(tokens)")}


def count_tokens(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT count(*) FROM tokens").fetchone()[0])


def first_values(connection: sqlite3.Connection, limit: int) -> list[tuple[str, str]]:
    """The first `limit` rows' keys and stored (encrypted) values, in key order."""
    return [(str(key), value) for key, value in connection.execute(
        "SELECT key, value FROM tokens ORDER BY key LIMIT ?", (limit,)
    )]


def token_batch(
    connection: sqlite3.Connection, columns: Sequence[str], *, after: str | None, size: int
) -> list[dict[str, Any]]:
    """Up to `size` rows after the key `after`, in key order, as {column: value}. `columns` must come
    from the caller's own list of names (they are spelt into the statement), never from the file."""
    statement = f"SELECT {', '.join(columns)} FROM tokens"
    if after is not None:
        statement += " WHERE key > ?"
    statement += " ORDER BY key LIMIT ?"
    params = (after, size) if after is not None else (size,)
    return [dict(zip(columns, row, strict=True)) for row in connection.execute(statement, params)]
