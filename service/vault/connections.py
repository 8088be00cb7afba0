"""What the bot asks the vault: a Page's connection and a shop's, each from one indexed query.

A connection is what a Messenger bot needs to answer on a Page and sell from its store, as frozen
values: the token, the account, the other side, and its health (`.health`, `.reason`). Building one
decrypts the one token it carries, never the rest of what the account owns. The store caches them
beside the tokens (vault/cache.py: derived entries, dropped with the rows they come from).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service import keys
from service.crypto import KeyRing
from service.models import utcnow
from service.providers.shopify import SHOP_SUFFIX
from service.vault import sql
from service.vault.cache import Entry
from service.vault.health import PAGE, SHOP, Facts, Health


class _Assessed:
    """`.health` and `.reason` of a connection, decided by vault/health.py at the moment they are read
    (a cached connection stays right as dates pass)."""

    facts: Facts

    @property
    def assessment(self) -> Health:
        """The whole verdict: state, reason, `until`, and the sentence that says it."""
        return self.facts.assess(utcnow())

    @property
    def health(self) -> str:
        """ "ok", "expiring_soon" or "needs_reconnect" (health.STATES)."""
        return self.assessment.state

    @property
    def reason(self) -> str | None:
        """Why it is not ok, as a reason code ("password_changed"; health.REASONS), else None."""
        return self.assessment.reason


@dataclass(frozen=True)
class PageConnection(_Assessed):
    page_id: str
    name: str | None  # the Page's name as Facebook gave it at connect time
    token: str = field(repr=False)  # the Page access token
    account: str | None  # the account UUID the Page belongs to
    shop: str | None  # the account's store, "acme.myshopify.com" (the first connected, when it has several)
    expires_at: datetime | None = None  # None: does not expire by time
    facts: Facts = field(default=Facts(PAGE), repr=False)


@dataclass(frozen=True)
class ShopConnection(_Assessed):
    shop: str  # "acme.myshopify.com"
    token: str = field(repr=False)  # a Shopify access token valid now (refreshed if it was due), unless
    # the store needs reconnecting: then the last one stored, which Shopify no longer accepts
    expires_at: datetime | None
    account: str | None
    page_ids: tuple[str, ...]  # the account's Pages that have a token, in key order
    facts: Facts = field(default=Facts(SHOP), repr=False)


def page_query(page_id: str) -> tuple[str, dict[str, Any]]:
    return sql.PAGE_CONNECTION, {"key": keys.page_token_key(page_id), "uuid_key": keys.page_uuid_key(page_id)}


def shop_query(shop_key: str) -> tuple[str, dict[str, Any]]:
    return sql.SHOP_CONNECTION, {"key": keys.shopify_token_key(shop_key), "uuid_key": keys.shopify_uuid_key(shop_key)}


def page_connection(page_id: str, rows: Sequence[Sequence[Any]], ring: KeyRing) -> PageConnection | None:
    """A row of sql.PAGE_CONNECTION as a connection; None when the Page has no token stored."""
    if not rows:
        return None
    key, ciphertext, expires_at, account, name, shop_token_key, state, reason, until = rows[0]
    shop = None
    if shop_token_key is not None:
        shop = shop_token_key.removeprefix(keys.SHOPIFY_TOKEN_PREFIX) + SHOP_SUFFIX
    expires = sql.from_disk(expires_at)
    return PageConnection(
        page_id=page_id,
        name=name,
        token=ring.decrypt(ciphertext, key_name=key),
        account=account,
        shop=shop,
        expires_at=expires,
        facts=Facts(PAGE, state, reason, sql.from_disk(until), expires),
    )


@dataclass(frozen=True)
class CachedShop:
    """A shop's connection as cached: the token's entry says when it is due for a refresh."""

    connection: ShopConnection
    entry: Entry


def shop_connection(domain: str, rows: Sequence[Sequence[Any]], ring: KeyRing) -> CachedShop | None:
    """The rows of sql.SHOP_CONNECTION (the shop's token first, then its account's Page tokens, without
    values) as a connection; None when the shop has no token stored."""
    if not rows:
        return None
    key, ciphertext, expires_at, refreshable, account, state, reason, until, refresh_expires_at = rows[0]
    expires = sql.from_disk(expires_at)
    token = ring.decrypt(ciphertext, key_name=key)
    pages = sorted(row[0] for row in rows[1:])
    facts = Facts(
        SHOP, state, reason, sql.from_disk(until), expires, bool(refreshable), sql.from_disk(refresh_expires_at)
    )
    connection = ShopConnection(
        shop=domain,
        token=token,
        expires_at=expires,
        account=account,
        page_ids=tuple(page_key.removeprefix(keys.PAGE_TOKEN_PREFIX) for page_key in pages),
        facts=facts,
    )
    return CachedShop(connection, Entry.of(token, expires, bool(refreshable)))
