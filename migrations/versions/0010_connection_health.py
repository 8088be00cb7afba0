"""Connection health beside the tokens, and what the providers removed.

`tokens` gains plain columns, never secrets (service/vault/health.py reads them):

- `health`, `health_reason`, `health_until`: the last verdict a provider gave on the stored token
  (`needs_reconnect` or `expiring_soon`, a reason code, and for `expiring_soon` the moment to act
  before); empty while nothing is wrong. A new token value clears them.
- `checked_at`: when the provider was last asked about this token (Graph's debug_token).
- `refresh_failures`, `refresh_retry_at`: failed Shopify refreshes in a row, and the time before which
  no process tries that shop again (the cooldown every process shares).
- `used_at`: when a bot last asked for the shop's token (noted at most once a minute per process), so
  the sweep refreshes ahead only the shops in use.

Partial indexes let the sweep find its work without walking the table: refreshable tokens by expiry
and by refresh-token expiry, Page tokens by when they were last checked.

`connection_removals` remembers each store or Page the providers removed (uninstall, redaction,
deauthorization, data deletion), with its name and account, until the merchant has seen it.

Added in place (ALTER TABLE ADD COLUMN), so SQLite keeps the table and revision 0006's triggers.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = {
    "health": lambda: sa.String(16),
    "health_reason": lambda: sa.String(32),
    "health_until": sa.DateTime,
    "checked_at": sa.DateTime,
    "refresh_failures": sa.Integer,
    "refresh_retry_at": sa.DateTime,
    "used_at": sa.DateTime,
}
REFRESHABLE = sa.text("refresh_token IS NOT NULL")
PAGE_TOKEN = sa.text("substr(key, 1, 22) = 'FACEBOOK_ACCESS_TOKEN_'")
INDEXES = (
    ("ix_tokens_refresh_due", "expires_at", REFRESHABLE),
    ("ix_tokens_refresh_chain", "refresh_expires_at", REFRESHABLE),
    ("ix_tokens_page_checked", "checked_at", PAGE_TOKEN),
)
UNSEEN = sa.text("seen_at IS NULL")


def upgrade() -> None:
    for name, kind in COLUMNS.items():
        op.add_column("tokens", sa.Column(name, kind(), nullable=True))
    for name, column_name, where in INDEXES:
        op.create_index(name, "tokens", [column_name], sqlite_where=where, postgresql_where=where)
    op.create_table(
        "connection_removals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("account_uuid", sa.String(36), nullable=True),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("removed_at", sa.DateTime(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=True),
    )
    op.create_index(
        "ix_connection_removals_account_uuid",
        "connection_removals",
        ["account_uuid"],
        sqlite_where=UNSEEN,
        postgresql_where=UNSEEN,
    )
    op.create_index("ix_connection_removals_removed_at", "connection_removals", ["removed_at"])


def downgrade() -> None:
    op.drop_index("ix_connection_removals_removed_at", table_name="connection_removals")
    op.drop_index("ix_connection_removals_account_uuid", table_name="connection_removals")
    op.drop_table("connection_removals")
    for name, _column, _where in INDEXES:
        op.drop_index(name, table_name="tokens")
    for name in COLUMNS:
        # In place on both databases (SQLite since 3.35): no batch rebuild of `tokens`, which would drop
        # its triggers. Health is found again by the next sweep.
        op.execute(f"ALTER TABLE tokens DROP COLUMN {name}")
