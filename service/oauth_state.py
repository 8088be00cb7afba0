"""OAuth state: a random value sent out with the authorize redirect and checked on the callback.

It lives in the database, so any instance can finish a flow another started. Only its SHA-256 is
stored (a leaked table cannot be replayed), it is bound to the browser that started the flow (the
hash of a nonce kept in that browser's session), it expires, and the callback that
uses it deletes it in the same transaction that checked it: it works once. A browser and a client
address can each hold only so many unfinished flows (429 beyond that).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection

from service.errors import InvalidState, TooManySignIns
from service.models import OAuthState, utcnow
from service.vault import TokenStore

STATES = OAuthState.__table__
STATE_LIFETIME = timedelta(minutes=10)
MAX_STATE_LENGTH = 128
# Unfinished flows one browser may hold (a person retrying a few times), and one address (generous:
# many merchants share an office or a proxy). Expired states are pruned by service/housekeeping.py.
MAX_STATES_PER_BROWSER = 20
MAX_STATES_PER_CLIENT = 500


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
    client_ip: str | None = None,
    now: datetime | None = None,
) -> str:
    """Record a pending flow and return the state to send to the provider. A browser (its nonce) or a
    client address already holding its cap of unexpired states is refused (TooManySignIns, 429)."""
    now = now or utcnow()
    state = secrets.token_urlsafe(32)
    values = {
        "state_hash": _digest(state),
        "provider": provider,
        "browser_hash": _digest(browser_nonce),
        "client_ip": client_ip,
        "shop": shop,
        "account_uuid": account_uuid,
        "scopes": ",".join(scopes),
        "redirect_uri": redirect_uri,
        "created_at": now,
        "expires_at": now + STATE_LIFETIME,
    }

    def record(connection: Connection) -> TooManySignIns | None:
        # Counted and inserted in one write transaction, so concurrent logins cannot all slip under a cap.
        for column, value, cap, whose in (
            (STATES.c.browser_hash, values["browser_hash"], MAX_STATES_PER_BROWSER, "this browser"),
            (STATES.c.client_ip, client_ip, MAX_STATES_PER_CLIENT, "your network address"),
        ):
            if value is None:
                continue
            count, first_expiry = connection.execute(
                select(func.count(), func.min(STATES.c.expires_at)).where(column == value, STATES.c.expires_at > now)
            ).one()
            if count >= cap:
                wait = max(1, math.ceil((first_expiry - now).total_seconds()))
                return TooManySignIns(
                    f"{count} sign-ins started from {whose} are unfinished; finish one, or try again in {wait} s.",
                    retry_after=wait,
                )
        connection.execute(insert(STATES).values(**values))
        return None

    refused = await store.run_write(record)
    if refused is not None:
        raise refused
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


async def forget_browser(store: TokenStore, browser_nonce: str) -> int:
    """Delete every unfinished flow a browser started (logging out): none of them can finish afterwards."""

    def remove(connection: Connection) -> int:
        return connection.execute(delete(STATES).where(STATES.c.browser_hash == _digest(browser_nonce))).rowcount

    return int(await store.run_write(remove))


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
