"""Which account a newly connected shop or Page belongs to, and writing it there in one transaction.

The rule, so that either order of connecting ends with one UUID:
1. a store or Page that is already linked keeps its account (a merchant back in a new browser finds
   the same UUID again);
2. otherwise it joins the account of the browser that started the flow;
3. otherwise a new account is made.
When a flow proves that one browser controls rows of two accounts (the browser's account and the
one a reconnected shop already had), the newer account is merged into the older one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from service.store import ACCOUNTS, TOKENS, TokenStore, TokenWrite


async def connect_rows(
    store: TokenStore,
    *,
    writes: Sequence[TokenWrite],
    uuid_keys: Sequence[str],
    session_account: str | None,
) -> str:
    """Store `writes` and the UUID entries `uuid_keys` under one account, in one transaction; return it."""
    return await store.run_write(lambda connection: _connect(store, connection, writes, uuid_keys, session_account))


def _connect(
    store: TokenStore,
    connection: Connection,
    writes: Sequence[TokenWrite],
    uuid_keys: Sequence[str],
    session_account: str | None,
) -> str:
    linked = (
        (
            connection.execute(
                select(ACCOUNTS.c.uuid)
                .where(ACCOUNTS.c.uuid.in_(select(TOKENS.c.account_uuid).where(TOKENS.c.key.in_(list(uuid_keys)))))
                .order_by(ACCOUNTS.c.created_at, ACCOUNTS.c.uuid)
            )
        )
        .scalars()
        .all()
    )
    session_exists = (
        session_account is not None
        and (connection.execute(select(ACCOUNTS.c.uuid).where(ACCOUNTS.c.uuid == session_account))).first() is not None
    )
    candidates = list(linked) + ([session_account] if session_exists and session_account not in linked else [])
    account = candidates[0] if candidates else str(uuid.uuid4())
    merged = [other for other in candidates[1:] if other != account]
    if merged:
        connection.execute(update(TOKENS).where(TOKENS.c.account_uuid.in_(merged)).values(account_uuid=account))
        # UUID entries that moved must now name their new account in their (encrypted) value.
        moved = (
            (connection.execute(select(TOKENS.c.key).where(TOKENS.c.account_uuid == account, TOKENS.c.type == "uuid")))
            .scalars()
            .all()
        )
        for key in moved:
            store.upsert_sync(connection, TokenWrite(key, account, "uuid", {"account_uuid": account}))
        connection.execute(delete(ACCOUNTS).where(ACCOUNTS.c.uuid.in_(merged)))
    for write in writes:
        store.upsert_sync(
            connection, TokenWrite(write.key, write.value, write.type, {**write.metadata, "account_uuid": account})
        )
    for key in uuid_keys:
        store.upsert_sync(connection, TokenWrite(key, account, "uuid", {"account_uuid": account}))
    return account
