"""A Facebook login waiting for the merchant to choose its Pages (DESIGN.md, "The connections page").

When a grant covers more than one Page, the callback stores nothing in the vault: it keeps the user
token here (encrypted here with the vault's key ring, so SQLAlchemy, which logs statements' parameters
at DEBUG, only ever sees ciphertext) with the Pages' names and tasks, and the browser's session keeps
a random id. The merchant's choice then re-reads the Page list from Facebook with the
user token, so a Page token that was not ticked is never written anywhere. Like an OAuth state, a
grant is bound to the browser that made it, expires, and is deleted by the choice that uses it; a
browser has one at most (a new login deletes the one before), and logging out deletes it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from service.crypto import KeyRing, keyring_of
from service.errors import InvalidState, UndecryptableValue
from service.models import FacebookGrant, utcnow
from service.vault import TokenStore

GRANTS = FacebookGrant.__table__
GRANT_LIFETIME = timedelta(minutes=15)
MAX_GRANT_ID_LENGTH = 64
MESSAGING = "MESSAGING"  # the Page task a bot needs to answer its messages


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _ring(store: TokenStore) -> KeyRing:
    return keyring_of(store.engine.sync_engine.dialect)  # the ring the store was opened with


@dataclass(frozen=True)
class GrantPage:
    """A Page of a grant as the choice form shows it: never its token."""

    id: str
    name: str
    category: str | None
    tasks: list[str]

    @property
    def can_message(self) -> bool:
        return MESSAGING in self.tasks


@dataclass(frozen=True)
class PendingGrant:
    user_id: str
    user_name: str | None
    user_token: str = field(repr=False)
    token_expires_at: datetime | None
    scopes: str
    account_uuid: str | None
    pages: list[GrantPage]


def _pages_json(pages: list[GrantPage]) -> str:
    return json.dumps(
        [{"id": page.id, "name": page.name, "category": page.category, "tasks": page.tasks} for page in pages]
    )


def _pages(text: str) -> list[GrantPage]:
    return [GrantPage(item["id"], item["name"], item["category"], list(item["tasks"])) for item in json.loads(text)]


async def hold(store: TokenStore, *, browser_nonce: str, grant: PendingGrant, now: datetime | None = None) -> str:
    """Keep a grant until the merchant chooses; return the id for the browser's session."""
    now = now or utcnow()
    grant_id = secrets.token_urlsafe(24)
    values = {
        "grant_hash": _digest(grant_id),
        "browser_hash": _digest(browser_nonce),
        "account_uuid": grant.account_uuid,
        "facebook_user_id": grant.user_id,
        "user_name": grant.user_name,
        "user_token": _ring(store).encrypt(grant.user_token),
        "token_expires_at": grant.token_expires_at,
        "scopes": grant.scopes,
        "pages": _pages_json(grant.pages),
        "created_at": now,
        "expires_at": now + GRANT_LIFETIME,
    }

    def record(connection: Connection) -> None:
        # One live grant per browser: a new login replaces the one it left waiting (and its user token).
        connection.execute(delete(GRANTS).where(GRANTS.c.browser_hash == values["browser_hash"]))
        connection.execute(insert(GRANTS).values(**values))

    await store.run_write(record)
    return grant_id


async def load(
    store: TokenStore, *, grant_id: str | None, browser_nonce: str | None, now: datetime | None = None
) -> PendingGrant:
    """The grant this browser holds; InvalidState when there is none, it is another browser's, or it expired
    (or no key opens its user token any more: it is as good as expired)."""
    if not grant_id or len(grant_id) > MAX_GRANT_ID_LENGTH or not browser_nonce:
        raise InvalidState("There is no Facebook login waiting for a choice of Pages; connect Facebook again.")
    now = now or utcnow()
    query = select(GRANTS).where(
        GRANTS.c.grant_hash == _digest(grant_id),
        GRANTS.c.browser_hash == _digest(browser_nonce),
        GRANTS.c.expires_at > now,
    )
    async with store.engine.connect() as connection:
        row = (await connection.execute(query)).mappings().first()
    try:
        user_token = None if row is None else _ring(store).decrypt(row["user_token"], key_name="a Facebook grant")
    except UndecryptableValue:
        user_token = None  # the key that wrote it was taken out of the ring since
    if row is None or user_token is None:
        raise InvalidState("This choice of Pages has expired or was already made; connect Facebook again.")
    return _grant(row, user_token)


def _grant(row: Any, user_token: str) -> PendingGrant:
    return PendingGrant(
        user_id=row["facebook_user_id"],
        user_name=row["user_name"],
        user_token=user_token,
        token_expires_at=row["token_expires_at"],
        scopes=row["scopes"],
        account_uuid=row["account_uuid"],
        pages=_pages(row["pages"]),
    )


async def release(store: TokenStore, grant_id: str) -> bool:
    """Delete a grant (chosen, or given up); False when it was gone already."""

    def remove(connection: Connection) -> int:
        return connection.execute(delete(GRANTS).where(GRANTS.c.grant_hash == _digest(grant_id))).rowcount

    return bool(await store.run_write(remove))


async def forget_browser(store: TokenStore, browser_nonce: str) -> int:
    """Delete the grant a browser has waiting (logging out): it holds a user token."""

    def remove(connection: Connection) -> int:
        return connection.execute(delete(GRANTS).where(GRANTS.c.browser_hash == _digest(browser_nonce))).rowcount

    return int(await store.run_write(remove))


async def forget_user(store: TokenStore, user_id: str) -> int:
    """Delete every waiting grant of a Facebook user (deauthorize, data deletion): they hold its token."""

    def remove(connection: Connection) -> int:
        return connection.execute(delete(GRANTS).where(GRANTS.c.facebook_user_id == user_id)).rowcount

    return int(await store.run_write(remove))


def prune_statement(now: datetime) -> Any:
    return delete(GRANTS).where(GRANTS.c.expires_at <= now)
