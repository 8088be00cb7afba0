"""A change log for token values, written by triggers, so every process can keep a cache fresh.

`token_version` holds one row, a counter; `token_changes` holds (seq, key) for the last
CHANGE_LOG_KEEP changes to a row's key or value. Triggers on `tokens` write both in the same
transaction as the change, whoever makes it: the store, a job, another instance, or someone at the
sqlite3 prompt. A reader that remembers the counter it last saw asks "which keys changed since?"
in one indexed query (service/changes.py).

On PostgreSQL the counter row is also a lock: a transaction that changes a token holds it until
commit, so `seq` order is commit order and a reader never skips a change still in flight.

SQLite drops a table's triggers when Alembic's batch mode rebuilds the table: a later revision
that runs `batch_alter_table("tokens")` must call `create_triggers()` from here again
(tests/test_freshness.py checks that they exist at head).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CHANGE_LOG_KEEP = 10_000

_BUMP = "UPDATE token_version SET version = version + 1 WHERE id = 1;"
_LOG = "INSERT INTO token_changes (seq, key) SELECT version, {row}.key FROM token_version WHERE id = 1;"
_PRUNE = f"DELETE FROM token_changes WHERE seq <= (SELECT version FROM token_version WHERE id = 1) - {CHANGE_LOG_KEEP};"

SQLITE_TRIGGERS = {
    "tokens_log_insert": f"AFTER INSERT ON tokens BEGIN {_BUMP} {_LOG.format(row='NEW')} {_PRUNE} END",
    "tokens_log_update": f"AFTER UPDATE OF key, value ON tokens BEGIN {_BUMP} {_LOG.format(row='NEW')} {_PRUNE} END",
    "tokens_log_rekey": (
        f"AFTER UPDATE OF key ON tokens WHEN OLD.key IS NOT NEW.key BEGIN {_BUMP} {_LOG.format(row='OLD')} END"
    ),
    "tokens_log_delete": f"AFTER DELETE ON tokens BEGIN {_BUMP} {_LOG.format(row='OLD')} {_PRUNE} END",
}

POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION salesbot_log_token_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE v bigint;
BEGIN
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.key IS DISTINCT FROM NEW.key) THEN
        UPDATE token_version SET version = version + 1 WHERE id = 1 RETURNING version INTO v;
        INSERT INTO token_changes (seq, key) VALUES (v, OLD.key);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        UPDATE token_version SET version = version + 1 WHERE id = 1 RETURNING version INTO v;
        INSERT INTO token_changes (seq, key) VALUES (v, NEW.key);
    END IF;
    DELETE FROM token_changes WHERE seq <= v - {CHANGE_LOG_KEEP};
    RETURN NULL;
END
$$
"""
POSTGRES_TRIGGER = (
    "CREATE TRIGGER tokens_log_changes AFTER INSERT OR DELETE OR UPDATE OF key, value ON tokens "
    "FOR EACH ROW EXECUTE FUNCTION salesbot_log_token_change()"
)


def create_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        op.execute(POSTGRES_TRIGGER)
    else:
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")


def drop_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS tokens_log_changes ON tokens")
        op.execute("DROP FUNCTION IF EXISTS salesbot_log_token_change()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")


def upgrade() -> None:
    version = op.create_table(
        "token_version",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])
    op.create_table(
        "token_changes",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("key", sa.Text(), nullable=False),
    )
    create_triggers()


def downgrade() -> None:
    drop_triggers()
    op.drop_table("token_changes")
    op.drop_table("token_version")
