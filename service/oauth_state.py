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

from sqlalchemy import delete, insert, select

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
    async with store.write_transaction() as connection:
        # Expired states are litter; sweeping them here keeps the table small without a cron job.
        await connection.execute(delete(STATES).where(STATES.c.expires_at < now))
        await connection.execute(
            insert(STATES).values(
                state_hash=_digest(state),
                provider=provider,
                browser_hash=_digest(browser_nonce),
                shop=shop,
                account_uuid=account_uuid,
                scopes=",".join(scopes),
                redirect_uri=redirect_uri,
                created_at=now,
                expires_at=now + STATE_LIFETIME,
            )
        )
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
    state_hash = _digest(state)
    async with store.write_transaction() as connection:
        row = (await connection.execute(select(STATES).where(STATES.c.state_hash == state_hash))).mappings().first()
        if row is None or row["provider"] != provider:
            raise InvalidState("This sign-in link is unknown or was already used; start again from the connect button.")
        if row["browser_hash"] != _digest(browser_nonce):
            raise InvalidState("This sign-in was started in another browser; start again from the connect button.")
        if row["expires_at"] <= now:
            raise InvalidState("This sign-in link has expired; start again from the connect button.")
        if shop is not None and row["shop"] != shop:
            raise InvalidState("This sign-in was started for another shop; start again from the connect button.")
        await connection.execute(delete(STATES).where(STATES.c.state_hash == state_hash))
    return PendingFlow(
        provider=row["provider"],
        shop=row["shop"],
        account_uuid=row["account_uuid"],
        scopes=[scope for scope in row["scopes"].split(",") if scope],
        redirect_uri=row["redirect_uri"],
    )
