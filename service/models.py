"""The declarative base, the UTC column type, and the tables outside the vault: OAuth state, Facebook
grants waiting for a choice of Pages, browser sessions, webhook bookkeeping and API keys. The vault's tables are in
service/vault/schema.py. The schema itself is created only by the Alembic revisions in migrations/;
these classes must match them (`alembic check` proves it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC on disk: SQLite has no time zones, and this way both
    databases store and compare the same thing."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # rows written by hand or by other tools
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class OAuthState(Base):
    """One pending OAuth flow. Stored in the database so that any instance can finish what another
    started; deleted by the callback that uses it, so it works once."""

    __tablename__ = "oauth_states"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the state sent out
    provider: Mapped[str] = mapped_column(String(16))
    browser_hash: Mapped[str] = mapped_column(String(64), index=True)  # sha256 of the browser's session nonce
    client_ip: Mapped[str | None] = mapped_column(String(64), index=True)  # the address that started the flow
    shop: Mapped[str | None] = mapped_column(Text)
    account_uuid: Mapped[str | None] = mapped_column(String(36))  # the account the browser was already in
    scopes: Mapped[str] = mapped_column(Text)
    redirect_uri: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class FacebookGrant(Base):
    """A Facebook login between its callback and the merchant's choice of Pages (service/pending_grants.py).
    Holds the user token, encrypted with the vault's key ring, and the Pages' names and tasks: never a Page
    token. The module encrypts before SQLAlchemy sees the value (an EncryptedText column would show the
    plaintext to SQLAlchemy's statement log)."""

    __tablename__ = "facebook_grants"

    grant_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the id in the session
    browser_hash: Mapped[str] = mapped_column(String(64), index=True)  # sha256 of the browser's session nonce
    account_uuid: Mapped[str | None] = mapped_column(String(36))  # the account the flow would join
    facebook_user_id: Mapped[str] = mapped_column(Text)
    user_name: Mapped[str | None] = mapped_column(Text)
    user_token: Mapped[str] = mapped_column(Text)  # Fernet ciphertext
    token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    scopes: Mapped[str] = mapped_column(Text)
    pages: Mapped[str] = mapped_column(Text)  # JSON: [{id, name, category, tasks}]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class BrowserSession(Base):
    """A browser's session (service/sessions.py): the cookie carries a random id, this row what the session
    holds, as JSON. Deleted at logout, so a copy of the cookie opens nothing afterwards."""

    __tablename__ = "browser_sessions"

    session_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's id
    data: Mapped[str] = mapped_column(Text)  # JSON: nonce, account, CSRF token, messages, pending grant id
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class WebhookDelivery(Base):
    """Shopify webhook ids already handled: a delivery seen twice is acknowledged and ignored."""

    __tablename__ = "webhook_deliveries"

    webhook_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    topic: Mapped[str] = mapped_column(Text)
    shop: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class DeletionRequest(Base):
    """A Facebook data-deletion request and what became of it, for the status URL Meta shows the user."""

    __tablename__ = "deletion_requests"

    confirmation_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    facebook_user_id: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    deleted_rows: Mapped[int] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """A key of the HTTP API (service/api_keys.py): the key itself is never stored, only its SHA-256."""

    __tablename__ = "api_keys"

    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)  # public: the key's second part
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))  # hex SHA-256 of the whole key
    scope: Mapped[str] = mapped_column(String(8))  # "read" or "proxy"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    calls: Mapped[int] = mapped_column(BigInteger, server_default="0")
