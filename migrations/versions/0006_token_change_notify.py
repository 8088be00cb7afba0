"""Freshness from the database: PostgreSQL notifies each changed key; SQLite logs expiry changes too.

PostgreSQL: the change-log trigger of revision 0004 is replaced by one that calls
`pg_notify('salesbot_tokens', key)`; every process LISTENs on one connection (service/vault/freshness.py).
The log's counter row was also a lock that every token-writing transaction queued on; it goes with it.
The two log tables stay (they are part of the schema both databases share) and stay empty.

SQLite: `PRAGMA data_version` says that something changed; the change log of revision 0004 says
which keys. The cache now holds a token's expiry too, so the update trigger also fires when
`expires_at` or `refresh_token` change (a token marked dead, a refreshed pair).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from types import ModuleType

from alembic import context, op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHANNEL = "salesbot_tokens"
WATCHED = "key, value, expires_at, refresh_token"

POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION salesbot_notify_token_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.key IS DISTINCT FROM NEW.key) THEN
        PERFORM pg_notify('{CHANNEL}', OLD.key);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('{CHANNEL}', NEW.key);
    END IF;
    RETURN NULL;
END
$$
"""
POSTGRES_TRIGGER = (
    f"CREATE TRIGGER tokens_notify_changes AFTER INSERT OR DELETE OR UPDATE OF {WATCHED} ON tokens "
    "FOR EACH ROW EXECUTE FUNCTION salesbot_notify_token_change()"
)


def _revision_0004() -> ModuleType:
    # Its trigger text and helpers, as Alembic loaded them: one copy of each.
    return context.script.get_revision("0004").module  # type: ignore[union-attr]


def _sqlite_update_trigger(columns: str) -> str:
    log = _revision_0004()
    body = log.SQLITE_TRIGGERS["tokens_log_update"].split(" BEGIN ", 1)[1]
    return f"CREATE TRIGGER tokens_log_update AFTER UPDATE OF {columns} ON tokens BEGIN {body}"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _revision_0004().drop_triggers()
        op.execute(POSTGRES_FUNCTION)
        op.execute(POSTGRES_TRIGGER)
    else:
        op.execute("DROP TRIGGER IF EXISTS tokens_log_update")
        op.execute(_sqlite_update_trigger(WATCHED))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS tokens_notify_changes ON tokens")
        op.execute("DROP FUNCTION IF EXISTS salesbot_notify_token_change()")
        _revision_0004().create_triggers()
    else:
        op.execute("DROP TRIGGER IF EXISTS tokens_log_update")
        op.execute(_sqlite_update_trigger("key, value"))
