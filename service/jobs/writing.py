"""Writing imported rows: check-then-write inside one write transaction, linked as the OAuth flows link.

An import must never replace a value already in the store unless told to (`--overwrite`). The check
and the write therefore happen in the same write transaction: on SQLite that transaction holds the
write lock from BEGIN IMMEDIATE; on PostgreSQL the rows that exist are locked with FOR UPDATE, and a
row that does not exist yet is claimed with INSERT ... ON CONFLICT DO NOTHING, so a token the service
writes between our read and our write is reported as "written meanwhile", never overwritten.

Rows are then written by the store's own upsert, so provider, subject and account links come out
exactly as when the OAuth flows store a token (a `*_UUID_*` entry links itself and the token beside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Text, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from service.errors import InvalidInput, UndecryptableValue
from service.models import utcnow
from service.store import TOKEN_TYPES, TOKENS, TokenStore, TokenWrite, validate_key

IMPORTED, REPLACED, UNCHANGED, SKIPPED = "imported", "replaced", "unchanged", "skipped"
WOULD = {IMPORTED: "would import", REPLACED: "would replace"}


@dataclass(frozen=True)
class Outcome:
    key: str
    status: str  # imported | replaced | unchanged | skipped
    reason: str = ""

    def line(self, dry_run: bool) -> str:
        status = WOULD.get(self.status, self.status) if dry_run else self.status
        return f"{status:<14} {self.key}" + (f"  ({self.reason})" if self.reason else "")


def check_write(write: TokenWrite) -> str | None:
    """Why this write cannot be stored, or None."""
    try:
        validate_key(write.key)
    except InvalidInput as error:
        return error.message
    if not write.value:
        return "empty value"
    if write.type not in TOKEN_TYPES:
        return f"type {write.type!r} is not one of {', '.join(TOKEN_TYPES)}"
    return None


async def _claim(connection: AsyncConnection, write: TokenWrite) -> bool:
    """Insert a bare row for a key that was absent; False when someone else wrote it first."""
    insert = (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(TOKENS)
    now = utcnow()
    statement = insert.values(
        key=write.key, value=write.value, type=write.type, created_at=now, updated_at=now
    ).on_conflict_do_nothing(index_elements=[TOKENS.c.key])
    return (await connection.execute(statement)).rowcount == 1


async def write_batch(
    store: TokenStore, writes: Sequence[TokenWrite], *, overwrite: bool, dry_run: bool
) -> list[Outcome]:
    """Store each write unless a different value is already there (or --overwrite); one transaction."""
    outcomes: list[Outcome] = []
    valid: list[TokenWrite] = []
    for write in writes:
        problem = check_write(write)
        if problem is not None:
            outcomes.append(Outcome(write.key, SKIPPED, problem))
        else:
            valid.append(write)
    if not valid:
        return outcomes

    keys = [write.key for write in valid]
    existing_query = select(TOKENS.c.key, type_coerce(TOKENS.c.value, Text)).where(TOKENS.c.key.in_(keys))
    if dry_run:
        async with store.engine.connect() as connection:
            existing = {key: value for key, value in await connection.execute(existing_query)}
        return outcomes + [_decide(store, write, existing, overwrite) for write in valid]

    async with store.write_transaction() as connection:
        existing = {key: value for key, value in await connection.execute(existing_query.with_for_update())}
        for write in valid:
            outcome = _decide(store, write, existing, overwrite)
            if outcome.status == IMPORTED and not await _claim(connection, write):
                outcome = Outcome(write.key, SKIPPED, "written by someone else meanwhile; run again to compare")
            if outcome.status in (IMPORTED, REPLACED):
                # The store's own upsert: the same provider, subject and account links as the OAuth flows.
                await store.upsert(connection, write)
            outcomes.append(outcome)
    return outcomes


def _decide(store: TokenStore, write: TokenWrite, existing: dict[str, str], overwrite: bool) -> Outcome:
    if write.key not in existing:
        return Outcome(write.key, IMPORTED)
    try:
        stored = store.keyring.decrypt(existing[write.key], key_name=write.key)
    except UndecryptableValue:
        if overwrite:
            return Outcome(write.key, REPLACED, "the stored value was unreadable")
        return Outcome(write.key, SKIPPED, "stored value unreadable with the current keys; --overwrite replaces it")
    if stored == write.value:
        return Outcome(write.key, UNCHANGED)
    if overwrite:
        return Outcome(write.key, REPLACED)
    return Outcome(write.key, SKIPPED, "a different value is already stored; --overwrite replaces it")
