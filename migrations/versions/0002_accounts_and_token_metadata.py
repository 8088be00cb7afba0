"""Accounts, and the columns the seed lacked beside its three; link existing rows to accounts.

The backfill reads the seed's `USER_UUID_{shop_key}` and `PAGE_UUID_{page_id}` rows, whose values
are encrypted, so it needs the key ring (STATE_TOKEN_SECRET for a seed database). A row that no key
opens stops the upgrade with the row's key named; the transaction leaves the database as it was.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op

from service.errors import SettingsError
from service.keys import describe_key

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
# What downgrade() deletes of the tokens: `salesbot downgrade` asks for --yes (service/migrate.py).
downgrade_loses = "refresh tokens, expiry times, scopes and account links"


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("account_uuid", sa.String(36), nullable=True))
        batch.add_column(sa.Column("provider", sa.String(16), nullable=True))
        batch.add_column(sa.Column("subject", sa.Text(), nullable=True))
        batch.add_column(sa.Column("granted_by", sa.Text(), nullable=True))
        batch.add_column(sa.Column("scopes", sa.Text(), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("refresh_token", sa.Text(), nullable=True))
        batch.add_column(sa.Column("refresh_expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("created_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(), nullable=True))
        batch.create_foreign_key("fk_tokens_account_uuid_accounts", "accounts", ["account_uuid"], ["uuid"])
        batch.create_index("ix_tokens_account_uuid", ["account_uuid"])
        batch.create_index("ix_tokens_granted_by", ["granted_by"])
    _backfill()


def _backfill() -> None:
    connection = op.get_bind()
    tokens = sa.table(
        "tokens",
        sa.column("key", sa.Text),
        sa.column("value", sa.Text),
        sa.column("type", sa.Text),
        sa.column("account_uuid", sa.String),
        sa.column("provider", sa.String),
        sa.column("subject", sa.Text),
    )
    accounts = sa.table("accounts", sa.column("uuid", sa.String), sa.column("created_at", sa.DateTime))
    rows = connection.execute(sa.select(tokens.c.key, tokens.c.value, tokens.c.type)).all()
    ring = context.config.attributes.get("keyring")
    known_accounts: set[str] = set()
    now = datetime.now(UTC).replace(tzinfo=None)
    for key, value, _type in rows:
        info = describe_key(key)
        if info is None:
            continue
        update: dict[str, object] = {"provider": info.provider, "subject": info.subject}
        if info.is_uuid:
            if ring is None:
                raise SettingsError(
                    f"Revision 0002 must read {key!r} to link it to an account: set STATE_TOKEN_SECRET "
                    "(and TOKEN_ENCRYPTION_KEYS if used) before upgrading."
                )
            account = _as_uuid(ring.decrypt(value, key_name=key))
            if account is not None:
                if account not in known_accounts:
                    connection.execute(sa.insert(accounts).values(uuid=account, created_at=now))
                    known_accounts.add(account)
                update["account_uuid"] = account
                # The token the UUID entry stands beside belongs to the same account.
                connection.execute(sa.update(tokens).where(tokens.c.key == info.token_key).values(account_uuid=account))
        connection.execute(sa.update(tokens).where(tokens.c.key == key).values(**update))


def _as_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_index("ix_tokens_granted_by")
        batch.drop_index("ix_tokens_account_uuid")
        batch.drop_constraint("fk_tokens_account_uuid_accounts", type_="foreignkey")
        for column in (
            "updated_at",
            "created_at",
            "refresh_expires_at",
            "refresh_token",
            "expires_at",
            "scopes",
            "granted_by",
            "subject",
            "provider",
            "account_uuid",
        ):
            batch.drop_column(column)
    op.drop_table("accounts")
