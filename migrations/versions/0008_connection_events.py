"""The connection event log and its webhook outbox (DESIGN.md, "The event log").

`connection_events` is append-only: one row per change to a connection (a shop, a Page, a Facebook
user), or per operator job, written in the same transaction as the change. Never a token: the
`fingerprint` column is a keyed digest of one. `seq` only grows (AUTOINCREMENT on SQLite, so a
deleted newest row never gives its number to the next one: followers resume after a seq).

`event_deliveries` is the outbox: one row per event to send to EVENTS_WEBHOOK_URL, deleted once
delivered, kept as `failed` after 24 hours of retries; it goes with its event (ON DELETE CASCADE).

PostgreSQL: a statement trigger notifies `salesbot_events` when events are added or a delivery is put
back to pending (store.events() and the delivery worker LISTEN for it). SQLite needs none: followers
watch PRAGMA data_version.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

CHANNEL = "salesbot_events"
POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION salesbot_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END
$$
"""
POSTGRES_TRIGGERS = {
    "connection_events_notify": "AFTER INSERT ON connection_events FOR EACH STATEMENT",
    "event_deliveries_notify": (
        "AFTER UPDATE OF status ON event_deliveries FOR EACH ROW "
        "WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status = 'pending')"
    ),
}
TABLE_OF_TRIGGER = {"connection_events_notify": "connection_events", "event_deliveries_notify": "event_deliveries"}


def _seq() -> sa.Column:
    return sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "connection_events",
        _seq(),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("account_uuid", sa.String(36), nullable=True),
        sa.Column("provider", sa.String(16), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(16), nullable=False),
        sa.Column("instance", sa.Text(), nullable=True),
        sa.Column("os_user", sa.Text(), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("health", sa.String(32), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_connection_events_account_uuid", "connection_events", ["account_uuid", "seq"])
    op.create_index("ix_connection_events_subject", "connection_events", ["provider", "subject", "seq"])
    op.create_index("ix_connection_events_at", "connection_events", ["at"])
    op.create_table(
        "event_deliveries",
        _seq(),
        sa.Column(
            "event_id",
            sa.String(36),
            sa.ForeignKey("connection_events.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("subject_key", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("deadline_at", sa.DateTime(), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(64), nullable=True),
    )
    op.create_index("ix_event_deliveries_due", "event_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_event_deliveries_subject", "event_deliveries", ["subject_key", "seq"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        for name, when in POSTGRES_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION salesbot_notify_events()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, table in TABLE_OF_TRIGGER.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        op.execute("DROP FUNCTION IF EXISTS salesbot_notify_events()")
    op.drop_index("ix_event_deliveries_subject", table_name="event_deliveries")
    op.drop_index("ix_event_deliveries_due", table_name="event_deliveries")
    op.drop_table("event_deliveries")
    op.drop_index("ix_connection_events_at", table_name="connection_events")
    op.drop_index("ix_connection_events_subject", table_name="connection_events")
    op.drop_index("ix_connection_events_account_uuid", table_name="connection_events")
    op.drop_table("connection_events")
