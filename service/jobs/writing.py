"""Writing imported rows: check-then-write inside one write transaction, linked as the OAuth flows link.

An import must never replace a value already in the store unless told to (`--overwrite`). The check
and the write therefore happen in the same write transaction: on SQLite that transaction holds the
write lock from BEGIN IMMEDIATE; on PostgreSQL the rows that exist are locked with FOR UPDATE, and the
rows that do not exist yet are claimed with one INSERT ... ON CONFLICT DO NOTHING RETURNING key, so a
token the service writes between our read and our write is reported as "written meanwhile", never
overwritten.

Rows are then written as the store's own upsert (`TokenStore._upsert`) writes them, write after write
in the caller's order, so provider, subject and account links come out exactly as when the OAuth flows
store a token (a `*_UUID_*` entry links itself and the token beside it). A batch goes in a few
statements rather than several per row: consecutive writes of one shape form a run, and a run is one
`executemany` of the prebuilt statement of service/bulk_upsert.py: plain tokens take their account
with a subquery on their UUID entry (what group commit runs); UUID entries name their own account and
then link the token beside them with one more `executemany`. tests/jobs/test_writing.py holds this
equal to `store.upsert` row by row, on both databases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, bindparam, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from service import bulk_upsert
from service.errors import InvalidInput, UndecryptableValue
from service.models import utcnow
from service.store import METADATA_COLUMNS, TOKEN_TYPES, TOKENS, TokenStore, TokenWrite, validate_key

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
    """Why this write cannot be stored, or None (what store.upsert would refuse)."""
    try:
        validate_key(write.key)
    except InvalidInput as error:
        return error.message
    if not isinstance(write.value, str) or not write.value:
        return "empty value"
    if write.type not in TOKEN_TYPES:
        return f"type {write.type!r} is not one of {', '.join(TOKEN_TYPES)}"
    unknown = set(write.metadata) - METADATA_COLUMNS
    if unknown:
        return f"unknown token fields: {', '.join(sorted(unknown))}"
    return None


def _insert(connection: AsyncConnection, table: Any) -> Any:
    return (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(table)


async def _claim(connection: AsyncConnection, writes: Sequence[TokenWrite], placeholder: str) -> set[str]:
    """Insert bare rows for keys that were absent; the keys claimed (the others someone wrote first).

    A claimed row holds `placeholder` (ciphertext) until bulk_upsert.upsert_all writes the row in full, in the same
    transaction, so nobody ever reads it; one `executemany` for all of them (SQLAlchemy's
    insertmanyvalues sends them as multi-row INSERTs and collects what RETURNING names)."""
    if not writes:
        return set()
    now = utcnow()
    result = await connection.execute(
        _CLAIM[connection.dialect.name],
        [
            {"b_key": write.key, "b_type": write.type, "b_value": placeholder, "b_created_at": now, "b_updated_at": now}
            for write in writes
        ],
    )
    return set(result.scalars())


def _claim_statement(insert: Any) -> Any:
    # Each column its own parameter: a parameter used twice confuses insertmanyvalues on asyncpg.
    return (
        insert(TOKENS)
        .values(
            key=bindparam("b_key"),
            value=type_coerce(bindparam("b_value"), Text),
            type=bindparam("b_type"),
            created_at=bindparam("b_created_at", type_=TOKENS.c.created_at.type),
            updated_at=bindparam("b_updated_at", type_=TOKENS.c.updated_at.type),
        )
        .on_conflict_do_nothing(index_elements=[TOKENS.c.key])
        .returning(TOKENS.c.key)
    )


_CLAIM = {"postgresql": _claim_statement(postgresql.insert), "sqlite": _claim_statement(sqlite.insert)}


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

    keys_wanted = [write.key for write in valid]
    existing_query = select(TOKENS.c.key, type_coerce(TOKENS.c.value, Text)).where(TOKENS.c.key.in_(keys_wanted))
    if dry_run:
        async with store.engine.connect() as connection:
            existing = {key: value for key, value in await connection.execute(existing_query)}
        return outcomes + [_decide(store, write, existing, overwrite) for write in valid]

    async with store.write_transaction() as connection:
        existing = {key: value for key, value in await connection.execute(existing_query.with_for_update())}
        decided = [(write, _decide(store, write, existing, overwrite)) for write in valid]
        claims = [write for write, outcome in decided if outcome.status == IMPORTED]
        claimed = await _claim(connection, claims, store.keyring.encrypt("claimed") if claims else "")
        to_write: list[TokenWrite] = []
        for write, outcome in decided:
            if outcome.status == IMPORTED and write.key not in claimed:
                outcome = Outcome(write.key, SKIPPED, "written by someone else meanwhile; run again to compare")
            if outcome.status in (IMPORTED, REPLACED):
                to_write.append(write)
            outcomes.append(outcome)
        # The store's own upsert, batched: the same provider, subject and account links as the OAuth flows.
        await bulk_upsert.upsert_all(connection, to_write)
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
