"""The vault's tables and the one rule for what may be written to them (DESIGN.md, "The vault").

`tokens` keeps the seed's shape and vocabulary (`key`, ciphertext `value`, `type`) with our columns
beside it; `accounts` holds one row per account UUID; `token_changes` is the change log that SQLite's
triggers write (revision 0006). The schema itself only ever comes from migrations/.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.errors import InvalidInput
from service.models import Account, Token, TokenChange


# (Moved here from service/models.py when the old store goes.)


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
    }
)
DATETIME_COLUMNS = frozenset({"expires_at", "refresh_expires_at", "refresh_lease_until", "created_at", "updated_at"})
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
