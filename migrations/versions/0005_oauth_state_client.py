"""OAuth states remember the client address that started them, and are indexed by browser and by
address, so that a login can count the unfinished flows of each (service/oauth_state.py).

Only `oauth_states` changes: no batch rebuild of `tokens`, whose triggers (0004) stay as they are.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("oauth_states", sa.Column("client_ip", sa.String(64), nullable=True))
    op.create_index("ix_oauth_states_browser_hash", "oauth_states", ["browser_hash"])
    op.create_index("ix_oauth_states_client_ip", "oauth_states", ["client_ip"])


def downgrade() -> None:
    op.drop_index("ix_oauth_states_client_ip", table_name="oauth_states")
    op.drop_index("ix_oauth_states_browser_hash", table_name="oauth_states")
    with op.batch_alter_table("oauth_states") as batch:
        batch.drop_column("client_ip")
