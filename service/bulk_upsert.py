"""Many token upserts in one round trip: what group commit runs for a batch of plain token writes.

`TokenStore._upsert` writes one row with up to four statements (account lookup, account row, the
upsert, the link), each a hop to the driver's thread and a statement built anew. For the common
write, a token whose account (if any) comes from its `*_UUID_*` entry, all of that fits in ONE
prebuilt statement: the account is a subquery on the UUID entry, so `executemany` over a run of
writes of the same shape does exactly what `_upsert` would do write after write, in order, in one
hop. Writes of `*_UUID_*` entries (which also re-link the token beside them) keep using `_upsert`.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from service import keys
from service.models import Token

TOKENS = Token.__table__
OWNER = TOKENS.alias("owner")  # the UUID entry whose account a token takes

# (account looked up from the UUID entry?, the metadata columns the write names)
Shape = tuple[bool, frozenset[str]]


def plan(key: str, metadata: dict[str, Any]) -> tuple[Shape, dict[str, Any]] | None:
    """The statement shape and parameters for one write, or None when it needs `_upsert`."""
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
