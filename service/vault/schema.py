"""The vault's tables and the one rule for what may be written to them (DESIGN.md, "The vault").

`tokens` keeps the seed's shape and vocabulary (`key`, ciphertext `value`, `type`) with our columns
beside it; `accounts` holds one row per account UUID; `token_changes` is the change log that SQLite's
triggers write (revision 0006); `connection_events` and `event_deliveries` are the event log and its
webhook outbox (revision 0008, service/vault/events.py). The schema itself only ever comes from migrations/.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from service.crypto import EncryptedText
from service.errors import InvalidInput
from service.models import Base, UTCDateTime, utcnow


class Account(Base):
    __tablename__ = "accounts"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


def _partial(name: str, column: str, where: str) -> Index:
    clause = text(where)
    return Index(name, column, sqlite_where=clause, postgresql_where=clause)


def _without_nulls(column: str) -> Index:
    # Rows without an account or a granting user (many) write no index entry (revision 0006).
    return _partial(f"ix_tokens_{column}", column, f"{column} IS NOT NULL")


# What the sweep looks for (revision 0010), each through an index of the rows it can concern.
_REFRESHABLE = "refresh_token IS NOT NULL"
PAGE_TOKEN_ROWS = "substr(key, 1, 22) = 'FACEBOOK_ACCESS_TOKEN_'"


class Token(Base):
    __tablename__ = "tokens"
    __table_args__ = (
        _without_nulls("account_uuid"),
        _without_nulls("granted_by"),
        _partial("ix_tokens_refresh_due", "expires_at", _REFRESHABLE),
        _partial("ix_tokens_refresh_chain", "refresh_expires_at", _REFRESHABLE),
        _partial("ix_tokens_page_checked", "checked_at", PAGE_TOKEN_ROWS),
    )

    # The seed's three columns, names and meaning unchanged.
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(EncryptedText())
    type: Mapped[str] = mapped_column(Text)

    account_uuid: Mapped[str | None] = mapped_column(ForeignKey("accounts.uuid"))
    provider: Mapped[str | None] = mapped_column(String(16))  # "shopify" | "facebook"
    subject: Mapped[str | None] = mapped_column(Text)  # the shop domain, Page id or Facebook user id
    granted_by: Mapped[str | None] = mapped_column(Text)  # the Facebook user whose grant gave a Page token or link
    scopes: Mapped[str | None] = mapped_column(Text)  # comma-separated, as the provider granted them
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refresh_token: Mapped[str | None] = mapped_column(EncryptedText())
    refresh_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A process refreshing this Shopify token holds the lease until then (vault/refresh.py).
    refresh_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # What the merchant sees instead of ids (revision 0007), as the provider gave them; never secrets.
    name: Mapped[str | None] = mapped_column(Text)  # the Page's, the Facebook user's or the shop's name
    category: Mapped[str | None] = mapped_column(Text)  # a Page's category
    tasks: Mapped[str | None] = mapped_column(Text)  # a Page's tasks for the user who granted it, comma-separated
    # Health (revision 0010, service/vault/health.py): the provider's last verdict on the stored token,
    # when it was last asked, and the Shopify refresh cooldown every process shares.
    health: Mapped[str | None] = mapped_column(String(16))  # "needs_reconnect" | "expiring_soon" | None
    health_reason: Mapped[str | None] = mapped_column(String(32))  # a reason code (health.REASONS)
    health_until: Mapped[datetime | None] = mapped_column(UTCDateTime())  # expiring_soon: act before then
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the provider last asked about it
    refresh_failures: Mapped[int | None] = mapped_column(Integer)  # failed refreshes in a row
    refresh_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # no refresh before then
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # a bot last asked for it (about)


class ConnectionRemoval(Base):
    """A store or Page a provider removed (uninstall, redaction, deauthorization, data deletion), kept
    until the merchant has seen it on the connections page; pruned after REMOVALS_KEPT."""

    __tablename__ = "connection_removals"
    __table_args__ = (
        Index(
            "ix_connection_removals_account_uuid",
            "account_uuid",
            sqlite_where=text("seen_at IS NULL"),
            postgresql_where=text("seen_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_uuid: Mapped[str | None] = mapped_column(String(36))
    provider: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(Text)  # the shop domain or the Page id
    name: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(32))  # a reason code whose state is "gone"
    removed_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TokenChange(Base):
    """SQLite's change log: the key of every change to a token's value or expiry, in commit order."""

    __tablename__ = "token_changes"

    # SQLite: the rowid (one b-tree, assigned on insert). PostgreSQL keeps the table, empty (revision 0006).
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False
    )
    key: Mapped[str] = mapped_column(Text)


def _seq() -> Mapped[int]:
    return mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True)


class ConnectionEvent(Base):
    """One change to a connection, or one operator job, in the order committed (append-only)."""

    __tablename__ = "connection_events"
    __table_args__ = (
        Index("ix_connection_events_account_uuid", "account_uuid", "seq"),
        Index("ix_connection_events_subject", "provider", "subject", "seq"),
        {"sqlite_autoincrement": True},  # a seq is never handed out twice, even after deletes
    )

    seq: Mapped[int] = _seq()
    id: Mapped[str] = mapped_column(String(36), unique=True)  # what receivers de-duplicate on
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str | None] = mapped_column(Text)  # the token row it is about, when one
    account_uuid: Mapped[str | None] = mapped_column(String(36))
    provider: Mapped[str | None] = mapped_column(String(16))
    subject: Mapped[str | None] = mapped_column(Text)  # the shop domain, Page id or Facebook user id
    name: Mapped[str | None] = mapped_column(Text)  # the subject's name when it happened
    actor: Mapped[str] = mapped_column(String(16))  # web | bot | sweep | webhook | cli
    instance: Mapped[str | None] = mapped_column(Text)  # host:pid of the process that wrote it
    os_user: Mapped[str | None] = mapped_column(Text)  # the CLI's operator
    reason: Mapped[str | None] = mapped_column(String(64))
    health: Mapped[str | None] = mapped_column(String(32))
    fingerprint: Mapped[str | None] = mapped_column(String(64))  # a keyed digest of the token, never the token
    detail: Mapped[str | None] = mapped_column(Text)  # JSON: a job's counts


class EventDelivery(Base):
    """The webhook outbox: an event waiting to be sent to EVENTS_WEBHOOK_URL (service/events/webhook.py)."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        Index("ix_event_deliveries_due", "status", "next_attempt_at"),
        Index("ix_event_deliveries_subject", "subject_key", "seq"),
    )

    seq: Mapped[int] = _seq()
    event_id: Mapped[str] = mapped_column(ForeignKey("connection_events.id", ondelete="CASCADE"), unique=True)
    subject_key: Mapped[str] = mapped_column(Text)  # deliveries of one subject go out in seq order
    status: Mapped[str] = mapped_column(String(16))  # pending | failed (delivered rows are deleted)
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())  # given up after this
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(64))


TOKEN_TYPES = ("token", "uuid")
_SPACE = re.compile(r"\s")
MAX_KEY_LENGTH = 512
# Columns a caller may set beside key, value and type. A column a write does not name keeps its value;
# one named with None is cleared (a reinstall that brings a non-expiring token clears expires_at).
METADATA_COLUMNS = frozenset(
    {
        "account_uuid",
        "provider",
        "subject",
        "granted_by",
        "scopes",
        "expires_at",
        "refresh_token",
        "refresh_expires_at",
        "refresh_lease_until",
        "name",
        "category",
        "tasks",
        "refresh_retry_at",  # an operator (or a test) may end a shop's cooldown early
    }
)
# What is known about the stored token rather than given with it: a write of a token clears those it does
# not name (a new token has no verdict, no failures, and has not been checked yet).
HEALTH_COLUMNS = ("health", "health_reason", "health_until", "checked_at", "refresh_failures", "refresh_retry_at")
DATETIME_COLUMNS = frozenset(
    {
        "expires_at",
        "refresh_expires_at",
        "refresh_lease_until",
        "created_at",
        "updated_at",
        "health_until",
        "checked_at",
        "refresh_retry_at",
        "used_at",
    }
)
ENCRYPTED_COLUMNS = frozenset({"value", "refresh_token"})


@dataclass(frozen=True)
class TokenWrite:
    key: str
    value: str
    type: str = "token"
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenRecord:
    key: str
    type: str
    value: str | None = field(repr=False)  # None in listings, which never decrypt
    account_uuid: str | None = None
    provider: str | None = None
    subject: str | None = None
    granted_by: str | None = None
    scopes: str | None = None
    expires_at: datetime | None = None
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    refresh_lease_until: datetime | None = None
    name: str | None = None
    category: str | None = None
    tasks: str | None = None
    health: str | None = None  # the stored verdict: read it through service.vault.health.of_record
    health_reason: str | None = None
    health_until: datetime | None = None
    checked_at: datetime | None = None
    refresh_failures: int | None = None
    refresh_retry_at: datetime | None = None
    used_at: datetime | None = None
    refreshable: bool = False  # a refresh token is stored (listings say so without reading it)


# Every column but the two ciphertexts, in table order: what listings read and TokenRecord carries.
RECORD_COLUMNS = tuple(column.name for column in Token.__table__.c if column.name not in ENCRYPTED_COLUMNS)


def key_problem(key: object) -> str | None:
    if not isinstance(key, str) or not key:
        return "A token key must be a non-empty string."
    if len(key) > MAX_KEY_LENGTH or not key.isprintable() or _SPACE.search(key):
        return f"A token key must be at most {MAX_KEY_LENGTH} printable characters without spaces."
    return None


def write_problem(write: TokenWrite) -> str | None:
    """Why the vault refuses this write, or None. The one rule: store writes and imports both ask it."""
    problem = key_problem(write.key)
    if problem is not None:
        return problem
    if not isinstance(write.value, str) or not write.value:
        return f"The value for {write.key!r} must be a non-empty string."
    if write.type not in TOKEN_TYPES:
        return f"The type of {write.key!r} must be one of {', '.join(TOKEN_TYPES)}."
    unknown = set(write.metadata) - METADATA_COLUMNS
    if unknown:
        return f"Unknown token fields: {', '.join(sorted(unknown))}."
    return None


def validate_key(key: object) -> str:
    problem = key_problem(key)
    if problem is not None:
        raise InvalidInput(problem)
    return key  # type: ignore[return-value]


def validate_write(write: TokenWrite) -> None:
    problem = write_problem(write)
    if problem is not None:
        raise InvalidInput(problem)
