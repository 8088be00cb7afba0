"""Keys of the HTTP API (DESIGN.md, "The HTTP API"): made, listed, revoked, checked, and their use counted.

A key is `sbk_<prefix>_<secret>`: the prefix (8 hex digits) is public and names the row, the secret is
256 random bits. Only the SHA-256 of the whole key is stored (a fast hash is enough for 256 random bits)
and compared in constant time. Every request looks its key up in the database, so a revocation
committed anywhere is refused by every instance at its next request. Making and revoking a key are
events, written in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service import events
from service.models import utcnow
from service.vault import Plan, ReadWrite, Step, TokenStore, from_disk
from service.vault.events import Event

logger = logging.getLogger("salesbot.api")

READ, PROXY = "read", "proxy"
SCOPES = (READ, PROXY)
KEY_PREFIX = "sbk"
_KEY = re.compile(r"sbk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Uses are counted in memory and written this often (and when the app stops): no write per request.
USAGE_EVERY = 5.0

_COLUMNS = "prefix, name, key_hash, scope, created_at, revoked_at, last_used_at, calls"
FIND = f"SELECT {_COLUMNS} FROM api_keys WHERE name = :which OR prefix = :which"
BY_PREFIX = "SELECT scope, key_hash, revoked_at FROM api_keys WHERE prefix = :prefix"
LIST = f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, name"
INSERT = (
    "INSERT INTO api_keys (prefix, name, key_hash, scope, created_at, calls) "
    "VALUES (:prefix, :name, :key_hash, :scope, :created_at, 0)"
)
REVOKE = "UPDATE api_keys SET revoked_at = :at WHERE prefix = :prefix AND revoked_at IS NULL"
USED = "UPDATE api_keys SET calls = calls + :calls, last_used_at = :at WHERE prefix = :prefix"


class Refused(Exception):
    """A usage error of `salesbot api-keys` (a bad name or scope, a name taken, no such key)."""


@dataclass(frozen=True)
class ApiKey:
    """A key's row, never the key: what `api-keys list` shows."""

    prefix: str
    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    calls: int

    @classmethod
    def of(cls, row: Sequence[Any]) -> ApiKey:
        prefix, name, _hash, scope, created, revoked, used, calls = row
        return cls(prefix, name, scope, from_disk(created), from_disk(revoked), from_disk(used), calls)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat(timespec="seconds")

        return {
            "name": self.name,
            "prefix": self.prefix,
            "scope": self.scope,
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
            "calls": self.calls,
        }


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(prefix, key): a fresh key, shown once."""
    prefix = secrets.token_hex(4)
    return prefix, f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"


async def create(store: TokenStore, *, name: str, scope: str) -> tuple[ApiKey, str]:
    """Make a key; (its row, the key). The key exists nowhere else afterwards: print it once."""
    if not _NAME.fullmatch(name):
        raise Refused("--name takes 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.")
    if scope not in SCOPES:
        raise Refused(f"--scope is one of {', '.join(SCOPES)}.")
    prefix, key = new_key()
    now = utcnow()
    row = {"prefix": prefix, "name": name, "key_hash": digest(key), "scope": scope, "created_at": now}
    said = Event(events.API_KEY_CREATED, name=name, detail={"prefix": prefix, "scope": scope})

    def decide(found: list[list[Any]]) -> tuple[Plan, bool]:
        if found[0]:
            return Plan(), False
        return store.recorder.record(Plan(steps=[Step(INSERT, [row])]), [said]), True

    # Read and insert in one writer transaction: a name taken meanwhile is said, not an IntegrityError.
    decided = await store.read_write(ReadWrite(reads=[(FIND, {"which": name})], decide=decide))
    if not decided.result:
        raise Refused(f"An API key named {name!r} exists already: choose another name (or revoke that one).")
    return ApiKey(prefix, name, scope, now, None, None, 0), key


async def listing(store: TokenStore) -> list[ApiKey]:
    return [ApiKey.of(row) for row in await store.query(LIST, {})]


async def revoke(store: TokenStore, which: str) -> tuple[ApiKey, bool]:
    """Revoke the key with this name or prefix; (its row, whether this call revoked it)."""
    now = utcnow()

    def decide(found: list[list[Any]]) -> tuple[Plan, tuple[ApiKey, bool] | None]:
        if not found[0]:
            return Plan(), None
        key = ApiKey.of(found[0][0])
        if key.revoked_at is not None:
            return Plan(), (key, False)
        said = Event(events.API_KEY_REVOKED, name=key.name, detail={"prefix": key.prefix, "scope": key.scope})
        plan = store.recorder.record(Plan(steps=[Step(REVOKE, [{"at": now, "prefix": key.prefix}])]), [said])
        return plan, (ApiKey(key.prefix, key.name, key.scope, key.created_at, now, key.last_used_at, key.calls), True)

    decided = await store.read_write(ReadWrite(reads=[(FIND, {"which": which})], decide=decide))
    if decided.result is None:
        raise Refused(f"No API key has the name or prefix {which!r} (see `salesbot api-keys list`).")
    return decided.result  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Caller:
    """Who a request is: the key's public prefix and its scope."""

    prefix: str
    scope: str


async def check(store: TokenStore, authorization: str | None) -> Caller | None:
    """The caller an `Authorization: Bearer <key>` header names; None for a missing, malformed, unknown or
    revoked key. Read from the database every time: a revocation holds at once, in every process."""
    scheme, _, given = (authorization or "").partition(" ")
    match = _KEY.fullmatch(given.strip()) if scheme.lower() == "bearer" else None
    if match is None:
        return None
    rows = await store.query(BY_PREFIX, {"prefix": match.group(1)})
    if not rows:
        digest(given)  # the same work as a known prefix, so timing says little about which prefixes exist
        return None
    scope, stored_hash, revoked_at = rows[0]
    if not hmac.compare_digest(digest(given.strip()).encode(), str(stored_hash).encode()) or revoked_at is not None:
        return None
    return Caller(match.group(1), scope)


class Usage:
    """Each key's calls and last use, counted in memory and written every USAGE_EVERY seconds in one
    batch (and once more when the app stops)."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store
        self._calls: dict[str, int] = {}
        self._last: dict[str, datetime] = {}

    def note(self, prefix: str) -> None:
        self._calls[prefix] = self._calls.get(prefix, 0) + 1
        self._last[prefix] = utcnow()

    async def flush(self) -> None:
        calls, last = self._calls, self._last
        if not calls:
            return
        self._calls, self._last = {}, {}
        rows = [{"prefix": prefix, "calls": count, "at": last[prefix]} for prefix, count in calls.items()]
        await self.store.write(Plan(steps=[Step(USED, rows)]))

    async def flush_periodically(self, every: float = USAGE_EVERY) -> None:
        try:
            while True:
                await asyncio.sleep(every)
                try:
                    await self.flush()
                except Exception as error:  # counts are best effort; the next round tries again
                    logger.warning("api key usage not written (%s)", type(error).__name__)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush())
