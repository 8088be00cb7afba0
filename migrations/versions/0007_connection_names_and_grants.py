"""Names beside the tokens, and Facebook grants waiting for the merchant to choose their Pages.

`tokens` gains three plain columns, never secrets: `name` (a Page's, a Facebook user's or a shop's
name as the provider gave it), `category` (a Page's) and `tasks` (a Page's tasks for the user who
granted it, comma-separated). Added in place (ALTER TABLE ADD COLUMN), so SQLite keeps the table and
revision 0006's triggers.

`facebook_grants` holds a Facebook login between its callback and the merchant's choice of Pages:
the user token (encrypted, as in `tokens`) and the Pages' names and tasks, never a Page token. It
lives minutes; housekeeping prunes what expired.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NAME_COLUMNS = ("name", "category", "tasks")


def upgrade() -> None:
    for column in NAME_COLUMNS:
        op.add_column("tokens", sa.Column(column, sa.Text(), nullable=True))
    op.create_table(
        "facebook_grants",
        sa.Column("grant_hash", sa.String(64), primary_key=True),
        sa.Column("browser_hash", sa.String(64), nullable=False),
        sa.Column("account_uuid", sa.String(36), nullable=True),
        sa.Column("facebook_user_id", sa.Text(), nullable=False),
        sa.Column("user_name", sa.Text(), nullable=True),
        sa.Column("user_token", sa.Text(), nullable=False),
        sa.Column("token_expires_at", sa.DateTime(), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("pages", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_facebook_grants_expires_at", "facebook_grants", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_facebook_grants_expires_at", table_name="facebook_grants")
    op.drop_table("facebook_grants")
    for column in NAME_COLUMNS:
        # Both databases drop a column in place (SQLite since 3.35): no batch rebuild of `tokens`,
        # which would drop its triggers. The names come back with the next connect.
        op.execute(f"ALTER TABLE tokens DROP COLUMN {column}")
