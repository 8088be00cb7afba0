"""Freshness from the database itself, and fewer pages written per token write.

PostgreSQL: revision 0004's change log (and its counter row, which every token-writing transaction
queued on) is replaced by a trigger that calls `pg_notify('salesbot_tokens', key)`; every process
LISTENs on one connection (service/vault/freshness.py). `token_changes` stays, empty.

SQLite: `PRAGMA data_version` says that something changed; the change log says which keys. The log
becomes one row per change in a rowid table (`seq INTEGER PRIMARY KEY`: one page, no separate index,
no counter row; the newest seq is the version), pruned by the writer rather than by every trigger,
and it also records changes of `expires_at` and `refresh_token`, which the cache now holds.

Both: the indexes on `account_uuid` and `granted_by` leave out NULLs (most rows have no granted_by,
new rows often no account yet), so a token write touches fewer index pages; `col = :x` still uses them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from types import ModuleType

import sqlalchemy as sa
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

_LOG = "INSERT INTO token_changes (key) VALUES ({row}.key);"
SQLITE_TRIGGERS = {
    "tokens_log_insert": f"AFTER INSERT ON tokens BEGIN {_LOG.format(row='NEW')} END",
    "tokens_log_update": f"AFTER UPDATE OF {WATCHED} ON tokens BEGIN {_LOG.format(row='NEW')} END",
    "tokens_log_rekey": f"AFTER UPDATE OF key ON tokens WHEN OLD.key IS NOT NEW.key BEGIN {_LOG.format(row='OLD')} END",
    "tokens_log_delete": f"AFTER DELETE ON tokens BEGIN {_LOG.format(row='OLD')} END",
}
INDEXED = ("account_uuid", "granted_by")


def _revision_0004() -> ModuleType:
    # Its triggers and tables, as Alembic loaded them: downgrade puts them back from one copy.
    return context.script.get_revision("0004").module  # type: ignore[union-attr]


def create_triggers() -> None:
    """SQLite batch mode drops a table's triggers when it rebuilds it: a later revision that rebuilds
    `tokens` must call this again (tests/vault/test_freshness.py checks they exist at head)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        op.execute(POSTGRES_TRIGGER)
    else:
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")


def _indexes(*, partial: bool) -> None:
    for column in INDEXED:
        op.drop_index(f"ix_tokens_{column}", table_name="tokens")
        where = sa.text(f"{column} IS NOT NULL") if partial else None
        op.create_index(f"ix_tokens_{column}", "tokens", [column], sqlite_where=where, postgresql_where=where)


def upgrade() -> None:
    _revision_0004().drop_triggers()
    op.drop_table("token_version")
    if op.get_bind().dialect.name == "sqlite":
        op.drop_table("token_changes")
        op.create_table(
            "token_changes",
            sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),  # the rowid
            sa.Column("key", sa.Text(), nullable=False),
        )
    create_triggers()
    _indexes(partial=True)


def downgrade() -> None:
    log = _revision_0004()
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS tokens_notify_changes ON tokens")
        op.execute("DROP FUNCTION IF EXISTS salesbot_notify_token_change()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.drop_table("token_changes")
        op.create_table(
            "token_changes",
            sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
            sa.Column("key", sa.Text(), nullable=False),
        )
    version = op.create_table(
        "token_version",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])
    log.create_triggers()
    _indexes(partial=False)
