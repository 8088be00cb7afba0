"""Browser sessions kept on the server: the cookie carries only a random id (service/sessions.py).

`browser_sessions` holds what a browser's session holds (its nonce, account, CSRF token, the messages
waiting for its next page, a pending grant's id) as JSON, keyed by the SHA-256 of the cookie's id, with an
expiry that housekeeping prunes. Logging out deletes the row, so a copy of the cookie opens nothing.
`facebook_grants` gains an index on `browser_hash`: a new login and a logout delete a browser's grants.

Sessions signed into cookies before this revision are not carried over: those browsers start a new
session (a merchant finds their account again by connecting the same store or Facebook login).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "browser_sessions",
        sa.Column("session_hash", sa.String(64), primary_key=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_browser_sessions_expires_at", "browser_sessions", ["expires_at"])
    op.create_index("ix_facebook_grants_browser_hash", "facebook_grants", ["browser_hash"])


def downgrade() -> None:
    op.drop_index("ix_facebook_grants_browser_hash", table_name="facebook_grants")
    op.drop_index("ix_browser_sessions_expires_at", table_name="browser_sessions")
    op.drop_table("browser_sessions")
