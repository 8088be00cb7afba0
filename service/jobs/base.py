"""What the jobs share: reading the tokens table in key order, batch by batch, as raw ciphertext.

Jobs read with keyset pagination (`WHERE key > :last ORDER BY key LIMIT n`), each batch in its own
short read, so memory stays bounded by the batch size and no read transaction is held open across
the whole run (a long-lived reader would keep SQLite from checkpointing its WAL).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Text, func, select, type_coerce

from service.jobs import DEFAULT_BATCH_SIZE, JobError
from service.store import TOKENS, TokenStore

__all__ = ["DEFAULT_BATCH_SIZE", "BatchHook", "JobError", "RawRow", "call_hook", "count_rows", "raw_batches"]


class BatchHook(Protocol):
    """Called after each batch is committed with the number of rows seen so far; tests raise from it to
    simulate an interruption at a known point."""

    def __call__(self, rows_seen: int) -> Any: ...


@dataclass(frozen=True)
class RawRow:
    key: str
    type: str
    value: str  # ciphertext
    refresh_token: str | None = None  # ciphertext
    provider: str | None = None
    subject: str | None = None
    expires_at: datetime | None = None

    def __repr__(self) -> str:  # ciphertext stays out of reprs, logs and test output
        return f"RawRow(key={self.key!r}, type={self.type!r})"


RAW_COLUMNS = (
    TOKENS.c.key,
    TOKENS.c.type,
    type_coerce(TOKENS.c.value, Text).label("value"),
    type_coerce(TOKENS.c.refresh_token, Text).label("refresh_token"),
    TOKENS.c.provider,
    TOKENS.c.subject,
    TOKENS.c.expires_at,
)


async def count_rows(store: TokenStore) -> int:
    async with store.engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(TOKENS))).scalar_one())


async def raw_batches(store: TokenStore, batch_size: int, *, where: Any = None) -> AsyncIterator[list[RawRow]]:
    if batch_size < 1:
        raise JobError("--batch-size must be at least 1.", status=2)
    last: str | None = None
    while True:
        statement = select(*RAW_COLUMNS).order_by(TOKENS.c.key).limit(batch_size)
        if last is not None:
            statement = statement.where(TOKENS.c.key > last)
        if where is not None:
            statement = statement.where(where)
        async with store.engine.connect() as connection:
            rows = [RawRow(**row) for row in (await connection.execute(statement)).mappings()]
        if not rows:
            return
        yield rows
        last = rows[-1].key
        if len(rows) < batch_size:
            return


async def call_hook(hook: Callable[[int], Any] | None, rows_seen: int) -> None:
    if hook is None:
        return
    result = hook(rows_seen)
    if hasattr(result, "__await__"):
        await result
