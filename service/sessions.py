"""Browser sessions kept on the server (DESIGN.md, "The browser session").

The cookie carries only a random id, 43 characters whatever the session holds. The session itself (the
browser's nonce, its account, its CSRF token, the messages waiting for its next page, a pending grant's
id) is a row of `browser_sessions` keyed by the id's SHA-256: read when a request starts, written when its
response starts if it changed. Routes use Starlette's `request.session` as before.

- An emptied session (logging out) deletes its row and clears the cookie: a copy of the cookie taken
  before opens nothing and completes nothing.
- A session whose account changes moves to a new id and the old row goes, so an id copied or planted
  before a sign-in is worth nothing after it.
- A save never brings back a row that is gone: a request racing a logout writes nothing.
- A session with an account lives 14 days from its last renewal, one without (a sign-in under way, a
  message waiting) an hour: anyone can make those, so they must not pile up. The expiry moves forward
  once a fourteenth of the lifetime has passed, so reading costs no write. Housekeeping prunes expired rows.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.models import BrowserSession, utcnow
from service.vault import TokenStore

SESSIONS = BrowserSession.__table__
LIFETIME = timedelta(days=14)
ANONYMOUS_LIFETIME = timedelta(hours=1)  # a session without an account
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False)


def lifetime(data: dict[str, Any]) -> timedelta:
    return LIFETIME if data.get("account") else ANONYMOUS_LIFETIME


@dataclass(frozen=True)
class Loaded:
    session_id: str
    data: dict[str, Any]
    expires_at: datetime


async def load(store: TokenStore, session_id: str | None, *, now: datetime | None = None) -> Loaded | None:
    """The live session this id names; None for anything else (malformed, unknown, ended, expired)."""
    if not session_id or not _SESSION_ID.fullmatch(session_id):
        return None
    query = select(SESSIONS.c.data, SESSIONS.c.expires_at).where(
        SESSIONS.c.session_hash == _digest(session_id), SESSIONS.c.expires_at > (now or utcnow())
    )
    async with store.engine.connect() as connection:
        row = (await connection.execute(query)).first()
    if row is None:
        return None
    try:
        data = json.loads(row.data)
    except ValueError:
        return None
    return Loaded(session_id, data, row.expires_at) if isinstance(data, dict) else None


def _insert(connection: Connection, data: dict[str, Any], now: datetime) -> str:
    session_id = secrets.token_urlsafe(32)
    values = {
        "session_hash": _digest(session_id),
        "data": _dump(data),
        "created_at": now,
        "expires_at": now + lifetime(data),
    }
    connection.execute(insert(SESSIONS).values(**values))
    return session_id


async def create(store: TokenStore, data: dict[str, Any], *, now: datetime) -> str:
    """A new session holding `data`; its id, for the cookie."""
    return await store.run_write(lambda connection: _insert(connection, data, now))  # type: ignore[no-any-return]


async def save(store: TokenStore, session_id: str, data: dict[str, Any], *, renew: bool, now: datetime) -> bool:
    """Write the session's data (and, renewing, a new expiry); False when its row is gone (ended meanwhile)."""
    values: dict[str, Any] = {"data": _dump(data)}
    if renew:
        values["expires_at"] = now + lifetime(data)
    statement = update(SESSIONS).where(SESSIONS.c.session_hash == _digest(session_id)).values(**values)
    return bool(await store.run_write(lambda connection: connection.execute(statement).rowcount))


async def rotate(store: TokenStore, session_id: str, data: dict[str, Any], *, now: datetime) -> str | None:
    """Move the session to a new id, in one transaction; None when its row is gone (ended meanwhile)."""

    def move(connection: Connection) -> str | None:
        gone = connection.execute(delete(SESSIONS).where(SESSIONS.c.session_hash == _digest(session_id)))
        return _insert(connection, data, now) if gone.rowcount else None

    return await store.run_write(move)  # type: ignore[no-any-return]


async def end(store: TokenStore, session_id: str) -> None:
    statement = delete(SESSIONS).where(SESSIONS.c.session_hash == _digest(session_id))
    await store.run_write(lambda connection: connection.execute(statement).rowcount)


def prune_statement(now: datetime) -> Any:
    return delete(SESSIONS).where(SESSIONS.c.expires_at <= now)


class ServerSessions:
    """ASGI middleware: `scope["session"]` from the row the cookie names; the row written, the cookie set or
    cleared, when the response starts. The store comes from the app's services (built in its lifespan)."""

    def __init__(self, app: ASGIApp, *, cookie_name: str, https_only: bool, sessionless: tuple[str, ...] = ()) -> None:
        self.app = app
        self.cookie_name = cookie_name
        self.flags = "; httponly; samesite=lax" + ("; secure" if https_only else "")
        # Path prefixes of mounted apps that never use the session: a browser sends them the cookie too, but
        # reading the row for them would be work for nothing.
        self.sessionless = sessionless

    def _cookie(self, session_id: str, data: dict[str, Any]) -> str:
        max_age = int(lifetime(data).total_seconds())
        return f"{self.cookie_name}={session_id}; path=/; Max-Age={max_age}{self.flags}"

    def _cleared(self) -> str:
        return f"{self.cookie_name}=null; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT{self.flags}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.sessionless):
            await self.app(scope, receive, send)
            return
        store: TokenStore = scope["app"].state.services.store
        sent = HTTPConnection(scope).cookies.get(self.cookie_name)
        loaded = await load(store, sent) if sent else None
        scope["session"] = dict(loaded.data) if loaded is not None else {}
        before = _dump(scope["session"])

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = await self._persist(store, scope["session"], loaded, sent is not None, before)
                if cookie is not None:
                    MutableHeaders(scope=message).append("Set-Cookie", cookie)
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _persist(
        self, store: TokenStore, data: dict[str, Any], loaded: Loaded | None, had_cookie: bool, before: str
    ) -> str | None:
        """What the session became, written; the Set-Cookie header value it needs, if any."""
        now = utcnow()
        if not data:
            if loaded is not None:
                await end(store, loaded.session_id)
            return self._cleared() if had_cookie else None  # an unknown or ended id is forgotten too
        if loaded is None:
            return self._cookie(await create(store, data, now=now), data)
        if data.get("account") != loaded.data.get("account"):
            moved = await rotate(store, loaded.session_id, data, now=now)
            return None if moved is None else self._cookie(moved, data)
        renew = loaded.expires_at - now < lifetime(data) * 13 / 14
        if (renew or _dump(data) != before) and await save(store, loaded.session_id, data, renew=renew, now=now):
            return self._cookie(loaded.session_id, data) if renew else None
        return None
