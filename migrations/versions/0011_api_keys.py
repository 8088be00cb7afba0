"""API keys for the HTTP API (service/api_keys.py): a name, a public prefix, the key's SHA-256 only.

A key is shown once, when `salesbot api-keys create` makes it; the table keeps its digest, never the
key. `scope` is `read` (the API's GETs with tokens) or `proxy` (health and the provider proxies, never
a token). A revoked key keeps its row (`revoked_at`), so `api-keys list` still names it. `last_used_at`
and `calls` are written a few seconds late, in batches (the API does not write on every request).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("calls", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("prefix", name="pk_api_keys"),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
