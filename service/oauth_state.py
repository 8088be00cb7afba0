"""OAuth state: a random value sent out with the authorize redirect and checked on the callback.

It lives in the database, so any instance can finish a flow another started. Only its SHA-256 is
stored (a leaked table cannot be replayed), it is bound to the browser that started the flow (the
hash of a nonce kept in that browser's signed session cookie), it expires, and the callback that
uses it deletes it in the same transaction that checked it: it works once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from service.errors import InvalidState
from service.models import OAuthState, utcnow
from service.store import TokenStore

STATES = OAuthState.__table__
STATE_LIFETIME = timedelta(minutes=10)
MAX_STATE_LENGTH = 128


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class PendingFlow:
    provider: str
    shop: str | None
    account_uuid: str | None
    scopes: list[str]
    redirect_uri: str


async def begin_flow(
    store: TokenStore,
    *,
    provider: str,
    browser_nonce: str,
    scopes: list[str],
    redirect_uri: str,
    shop: str | None = None,
    account_uuid: str | None = None,
    now: datetime | None = None,
) -> str:
    """Record a pending flow and return the state to send to the provider."""
    now = now or utcnow()
    state = secrets.token_urlsafe(32)
    values = {
        "state_hash": _digest(state),
        "provider": provider,
        "browser_hash": _digest(browser_nonce),
        "shop": shop,
        "account_uuid": account_uuid,
        "scopes": ",".join(scopes),
        "redirect_uri": redirect_uri,
        "created_at": now,
        "expires_at": now + STATE_LIFETIME,
    }

    def record(connection: Connection) -> None:
        # Expired states are litter; sweeping them here keeps the table small without a cron job.
        connection.execute(delete(STATES).where(STATES.c.expires_at < now))
        connection.execute(insert(STATES).values(**values))

    await store.run_write(record)
    return state


async def finish_flow(
    store: TokenStore,
    *,
    state: str | None,
    provider: str,
    browser_nonce: str | None,
    shop: str | None = None,
    now: datetime | None = None,
) -> PendingFlow:
    """Check and consume a state. Every failure leaves the table as it was and says which check failed."""
    if not state or len(state) > MAX_STATE_LENGTH:
        raise InvalidState("The sign-in link is missing its state; start again from the connect button.")
    if not browser_nonce:
        raise InvalidState(
            "This browser did not start this sign-in (no session cookie); start again from the connect button."
        )
    now = now or utcnow()
    state_hash, browser_hash = _digest(state), _digest(browser_nonce)

    def consume(connection: Connection) -> Any:
        # One statement when the state is good (the common case): delete it only if every check holds.
        matches = [
            STATES.c.state_hash == state_hash,
            STATES.c.provider == provider,
            STATES.c.browser_hash == browser_hash,
            STATES.c.expires_at > now,
        ]
        if shop is not None:
            matches.append(STATES.c.shop == shop)
        consumed = delete(STATES).where(*matches).returning(*STATES.c)
        row = connection.execute(consumed).mappings().first()
        if row is None:
            # Nothing deleted, so the table is as it was: read the row to say which check failed.
            found = connection.execute(select(STATES).where(STATES.c.state_hash == state_hash)).mappings().first()
            _refuse(found, provider=provider, browser_hash=browser_hash, shop=shop, now=now)
        return row

    row = await store.run_write(consume)
    return PendingFlow(
        provider=row["provider"],
        shop=row["shop"],
        account_uuid=row["account_uuid"],
        scopes=[scope for scope in row["scopes"].split(",") if scope],
        redirect_uri=row["redirect_uri"],
    )


def _refuse(row: Any, *, provider: str, browser_hash: str, shop: str | None, now: datetime) -> NoReturn:
    if row is None or row["provider"] != provider:
        raise InvalidState("This sign-in link is unknown or was already used; start again from the connect button.")
    if row["browser_hash"] != browser_hash:
        raise InvalidState("This sign-in was started in another browser; start again from the connect button.")
    if row["expires_at"] <= now:
        raise InvalidState("This sign-in link has expired; start again from the connect button.")
    if shop is not None and row["shop"] != shop:
        raise InvalidState("This sign-in was started for another shop; start again from the connect button.")
    # Every check holds now but the delete found nothing: the state was used meanwhile.
    raise InvalidState("This sign-in link is unknown or was already used; start again from the connect button.")
