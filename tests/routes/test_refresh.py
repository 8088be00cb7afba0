"""Expiring Shopify tokens: refreshed once under concurrency, in-process and across store instances."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx

from service.models import utcnow
from service.settings import Settings
from service.vault import TokenStore
from tests.web import Web, connect_shopify, running_app

SHOP = "acme-7cu19ngr.myshopify.com"
KEY = "SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr"


def refresh_calls(web: Web) -> int:
    return sum(("grant_type", "refresh_token") in r.form for r in web.sandbox.requests)


async def expire_soon(web: Web) -> None:
    await web.store.store_token(KEY, (await web.store.get_token(KEY)) or "", expires_at=utcnow() + timedelta(minutes=1))


async def test_a_fresh_token_is_handed_out_without_a_call(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        stored = await web.store.get_token(KEY)
        assert await web.store.get_shopify_token(SHOP) == stored
        assert await web.store.get_shopify_token("acme-7cu19ngr") == stored
        assert refresh_calls(web) == 0
        assert await web.store.get_shopify_token("unknown-shop") is None


async def test_concurrent_callers_cause_one_refresh(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        old = await web.store.get_record(KEY)
        await expire_soon(web)
        tokens = await asyncio.gather(*(web.store.get_shopify_token(SHOP) for _ in range(20)))
        assert refresh_calls(web) == 1
        new = await web.store.get_record(KEY)
        # The first caller refreshed; the others, while it did, were handed the token still valid for a minute.
        assert tokens[0] == new.value != old.value
        assert set(tokens) <= {old.value, new.value}
        assert new.refresh_lease_until is None
        assert new.refresh_token != old.refresh_token and new.expires_at > utcnow() + timedelta(minutes=50)
        # The sandbox agrees: the new pair works, the old access token is dead. The old refresh token
        # stays usable until the new pair is first used (Shopify, since 2026-08-28); then it is retired.
        assert web.sandbox.valid_shopify_tokens(SHOP) == {new.value}
        assert web.sandbox.valid_shopify_refresh_tokens(SHOP) == {new.refresh_token, old.refresh_token}
        async with TokenStore.open(web.settings, transport=web.outbound) as bot, bot.shopify_client(SHOP) as client:
            assert (await client.post("graphql.json", json={"query": "{ shop { name } }"})).status_code == 200
        assert web.sandbox.valid_shopify_refresh_tokens(SHOP) == {new.refresh_token}


async def test_two_instances_on_one_database_refresh_once(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        await expire_soon(web)
        old = await web.store.get_record(KEY)
        # A second instance: its own connections, cache, locks and HTTP client; only the database is shared.
        async with (
            httpx.AsyncClient(transport=web.outbound) as other_http,
            TokenStore.open(web.settings, http_client=other_http) as other_store,
        ):
            results = await asyncio.gather(
                *(store.get_shopify_token(SHOP) for store in (web.store, other_store) for _ in range(5))
            )
        assert refresh_calls(web) == 1
        new = await web.store.get_record(KEY)
        # Whoever lost the lease was handed the old token, still valid for a minute, rather than waiting.
        assert new.value in results and set(results) <= {old.value, new.value}
        assert web.sandbox.valid_shopify_tokens(SHOP) == {new.value}


async def test_a_failed_refresh_keeps_the_old_token_and_backs_off(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        await expire_soon(web)
        before = await web.store.get_record(KEY)
        web.sandbox.faults.add("shopify.access_token", "status_500", times=5)
        assert await web.store.get_shopify_token(SHOP) == before.value
        assert await web.store.get_shopify_token(SHOP) == before.value
        assert refresh_calls(web) == 1  # the second call waited out the back-off instead of retrying
        after = await web.store.get_record(KEY)
        assert (after.refresh_token, after.refresh_lease_until) == (before.refresh_token, None)


async def test_non_expiring_tokens_keep_working(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        web.sandbox.config.shopify_expiring = False
        await connect_shopify(web.browser)
        record = await web.store.get_record(KEY)
        assert record.expires_at is None and record.refresh_token is None
        assert await web.store.get_shopify_token(SHOP) == record.value
        assert refresh_calls(web) == 0
