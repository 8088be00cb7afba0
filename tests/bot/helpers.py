"""A merchant with a store and three Pages, connected through the real flows, and a bot's own store beside
the app's (its own cache, locks and HTTP; only the database and the sandbox are shared)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from service.vault import TokenStore
from tests.web import Web, connect_facebook, connect_shopify, status_json

SHOP = "acme-7cu19ngr.myshopify.com"
SHOP_KEY = "SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr"
PAGES = ("101", "102", "103")


async def connect_merchant(web: Web) -> str:
    """Shopify, then Facebook, from one browser: one account holding the store and the three Pages."""
    await connect_shopify(web.browser)
    await connect_facebook(web.browser)
    account = (await status_json(web.browser))["account"]
    assert account is not None
    return account


@asynccontextmanager
async def bot_store(web: Web) -> AsyncIterator[TokenStore]:
    """The store a bot process opens: settings alone, its HTTP through the test's sandbox-only transport."""
    async with TokenStore.open(web.settings, transport=web.outbound) as store:
        yield store


def calls(web: Web, path_end: str, method: str = "POST") -> int:
    return sum(r.method == method and r.path.endswith(path_end) for r in web.sandbox.requests)


def refresh_calls(web: Web) -> int:
    return sum(("grant_type", "refresh_token") in r.form for r in web.sandbox.requests)


# PostgreSQL delivers another process's change as a notification, milliseconds after its commit; on SQLite
# the very next read sees it (PRAGMA data_version).
NOTIFY_WITHIN = 5.0


async def seen(probe: Callable[[], Awaitable[object]], expected: object, backend: str) -> None:
    """probe() answers `expected`: at once on SQLite, within NOTIFY_WITHIN seconds on PostgreSQL."""
    deadline = time.monotonic() + (0 if backend == "sqlite" else NOTIFY_WITHIN)
    while (got := await probe()) != expected:
        assert time.monotonic() < deadline, f"still {got!r}, not {expected!r}"
        await asyncio.sleep(0.005)
