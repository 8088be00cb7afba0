"""The seed's table, exactly as its TokenStorage created it.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
# What downgrade() deletes of the tokens: `salesbot downgrade` asks for --yes (service/migrate.py).
downgrade_loses = "every stored token (the tokens table)"


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("key", sa.Text(), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tokens")
