"""Many token upserts in one round trip: what group commit runs for a batch of plain token writes.

`TokenStore._upsert` writes one row with up to four statements (account lookup, account row, the
upsert, the link), each a hop to the driver's thread and a statement built anew. For the common
write, a token whose account (if any) comes from its `*_UUID_*` entry, all of that fits in ONE
prebuilt statement: the account is a subquery on the UUID entry, so `executemany` over a run of
writes of the same shape does exactly what `_upsert` would do write after write, in order, in one
hop. A run of `*_UUID_*` entries is one upsert plus one statement that links the token beside each
entry to its account. `upsert_all` is that, for any sequence of writes: group commit's batches and
the import jobs both write through it.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from service import keys
from service.models import Account, Token, utcnow

if TYPE_CHECKING:
    from service.store import TokenWrite

TOKENS = Token.__table__
ACCOUNTS = Account.__table__
OWNER = TOKENS.alias("owner")  # the UUID entry whose account a token takes

# (account looked up from the UUID entry?, the metadata columns the write names)
Shape = tuple[bool, frozenset[str]]


def plan(key: str, metadata: dict[str, Any]) -> tuple[Shape, dict[str, Any]] | None:
    """The statement shape and parameters for a token write, or None for a `*_UUID_*` entry."""
    info = keys.describe_key(key)
    if info is not None and info.is_uuid:
        return None
    params = dict(metadata)
    lookup = False
    if info is not None:
        params.setdefault("provider", info.provider)
        params.setdefault("subject", info.subject)
        if "account_uuid" not in params and info.uuid_key is not None:
            lookup = True
            params["uuid_key"] = info.uuid_key
    return (lookup, frozenset(name for name in params if name != "uuid_key")), params


def plan_write(write: TokenWrite) -> tuple[Hashable, dict[str, Any], str | None]:
    """(run shape, parameters, token key to link) for any write, as TokenStore._upsert sees it."""
    planned = plan(write.key, dict(write.metadata))
    if planned is not None:  # a token: its account, if any, from its UUID entry in the statement
        return ("token", planned[0]), planned[1], None
    info = keys.describe_key(write.key)
    assert info is not None and info.is_uuid
    params = dict(write.metadata)
    params.setdefault("provider", info.provider)
    params.setdefault("subject", info.subject)
    if "account_uuid" not in params:
        account = keys.as_uuid(write.value)
        if account is not None:
            params["account_uuid"] = account
    link = info.token_key if params.get("account_uuid") else None
    return ("uuid", (False, frozenset(params))), params, link


@functools.cache
def statement(dialect_name: str, shape: Hashable) -> Insert:
    lookup, names = shape  # type: ignore[misc]
    insert = (postgresql.insert if dialect_name == "postgresql" else sqlite.insert)(TOKENS)
    values: dict[str, Any] = {
        name: bindparam(f"p_{name}", type_=TOKENS.c[name].type)
        for name in ("key", "value", "type", *sorted(names), "created_at", "updated_at")
    }
    update: dict[str, Any] = {
        "value": insert.excluded.value,
        "type": insert.excluded.type,
        "updated_at": insert.excluded.updated_at,
        **{name: insert.excluded[name] for name in names},
    }
    if lookup:
        values["account_uuid"] = (
            select(OWNER.c.account_uuid).where(OWNER.c.key == bindparam("p_uuid_key")).scalar_subquery()
        )
        # _upsert sets the account only when the UUID entry names one; a row keeps its link otherwise.
        update["account_uuid"] = func.coalesce(insert.excluded.account_uuid, TOKENS.c.account_uuid)
    return insert.values(values).on_conflict_do_update(index_elements=[TOKENS.c.key], set_=update)


def parameters(key: str, value: str, type: str, params: dict[str, Any], now: Any) -> dict[str, Any]:
    row = {f"p_{name}": item for name, item in params.items()}
    row.update(p_key=key, p_value=value, p_type=type, p_created_at=now, p_updated_at=now)
    return row


_LINK = update(TOKENS).where(TOKENS.c.key == bindparam("b_token_key")).values(account_uuid=bindparam("b_account"))


@functools.cache
def _ensure_accounts(dialect_name: str) -> Insert:
    insert = (postgresql.insert if dialect_name == "postgresql" else sqlite.insert)(ACCOUNTS)
    return insert.values(
        uuid=bindparam("b_uuid"), created_at=bindparam("b_created_at", type_=ACCOUNTS.c.created_at.type)
    ).on_conflict_do_nothing(index_elements=["uuid"])


async def upsert_all(connection: AsyncConnection, writes: Sequence[TokenWrite]) -> None:
    """What `TokenStore.upsert` does for each write in order, one executemany per run of one shape."""
    dialect = connection.dialect.name
    now = utcnow()
    run: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    shape: Any = None

    async def flush() -> None:
        if not run:
            return
        accounts = sorted({row["p_account_uuid"] for row in run if row.get("p_account_uuid")})
        if accounts:
            await connection.execute(
                _ensure_accounts(dialect), [{"b_uuid": account, "b_created_at": now} for account in accounts]
            )
        await connection.execute(statement(dialect, shape[1]), list(run))
        if links:
            # The token beside a UUID entry belongs to the same account, as the seed meant it.
            await connection.execute(_LINK, list(links))
        run.clear()
        links.clear()

    for write in writes:
        write_shape, params, link = plan_write(write)
        if write_shape != shape:
            await flush()
            shape = write_shape
        run.append(parameters(write.key, write.value, write.type, params, now))
        if link is not None:
            links.append({"b_token_key": link, "b_account": params["account_uuid"]})
    await flush()
