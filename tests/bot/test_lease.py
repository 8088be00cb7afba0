"""A refresh lease left behind never blocks a caller whose token still works; an expired token waits at
most one lease, then takes over or ends with a clear error (vault/refresh.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from service.errors import ProviderUnavailable
from service.models import utcnow
from service.settings import Settings
from tests.bot.helpers import SHOP, SHOP_KEY, bot_store, connect_merchant, refresh_calls
from tests.command import ROOT
from tests.conftest import base_environ
from tests.web import Web, provider_environ, running_app

TIMEOUT = "1"  # HTTP_TIMEOUT_SECONDS here: a lease of 1 + 2 s


async def expires_in(web: Web, delta: timedelta) -> str:
    """Set the stored token's expiry (a refresh token stays stored); return the token."""
    await web.store.set_metadata(SHOP_KEY, expires_at=utcnow() + delta)
    token = await web.store.get_token(SHOP_KEY)
    assert token is not None
    return token


async def test_a_lease_held_elsewhere_does_not_block_a_token_still_valid(migrated: Settings) -> None:
    async with running_app(migrated.database_url, HTTP_TIMEOUT_SECONDS=TIMEOUT) as web:
        await connect_merchant(web)
        token = await expires_in(web, timedelta(minutes=2))  # due for refresh, valid for two more minutes
        # As a process of the last release left it when it died: a 30 s lease.
        now = utcnow()
        assert await web.store.take_refresh_lease(SHOP_KEY, now=now, until=now + timedelta(seconds=30))
        async with bot_store(web) as store, asyncio.timeout(1.0):  # the old code waited the 30 s out
            assert await store.get_shopify_token(SHOP) == token
            shop = await store.shop_connection(SHOP)
            assert shop is not None and shop.token == token
            async with store.shopify_client(SHOP) as client:
                response = await client.post("graphql.json", json={"query": "{ shop { name } }"})
                assert response.status_code == 200
        assert refresh_calls(web) == 0  # the holder's business, not ours


async def test_an_expired_token_waits_for_the_lease_then_takes_over(migrated: Settings) -> None:
    async with running_app(migrated.database_url, HTTP_TIMEOUT_SECONDS=TIMEOUT) as web:
        await connect_merchant(web)
        old = await expires_in(web, timedelta(seconds=-1))
        async with bot_store(web) as store:
            lease = store.shopify_tokens.lease
            assert lease == timedelta(seconds=3)  # one attempt (the timeout) and a margin, not 30 s
            now = utcnow()
            until = now + timedelta(seconds=1.5)
            assert await web.store.take_refresh_lease(SHOP_KEY, now=now, until=until)
            started = time.monotonic()
            token = await store.get_shopify_token(SHOP)
            waited = time.monotonic() - started
        assert token != old and token in web.sandbox.valid_shopify_tokens(SHOP)
        assert refresh_calls(web) == 1
        assert utcnow() > until  # it did not take a live lease...
        assert waited < lease.total_seconds() + float(TIMEOUT)  # ...and waited no longer than one lease
        record = await web.store.get_record(SHOP_KEY)
        assert record is not None and (record.value, record.refresh_lease_until) == (token, None)


async def test_an_expired_token_behind_a_lease_that_outlasts_ours_fails_clearly(migrated: Settings) -> None:
    async with running_app(migrated.database_url, HTTP_TIMEOUT_SECONDS=TIMEOUT) as web:
        await connect_merchant(web)
        await expires_in(web, timedelta(seconds=-1))
        now = utcnow()
        assert await web.store.take_refresh_lease(SHOP_KEY, now=now, until=now + timedelta(minutes=5))
        async with bot_store(web) as store:
            started = time.monotonic()
            with pytest.raises(ProviderUnavailable, match="another process is refreshing"):
                await store.shop_connection(SHOP)
            waited = time.monotonic() - started
            assert store.shopify_tokens.lease.total_seconds() <= waited < 2 * store.shopify_tokens.lease.total_seconds()
        assert refresh_calls(web) == 0


async def test_an_expired_token_whose_takeover_fails_ends_in_a_clear_error(migrated: Settings) -> None:
    async with running_app(migrated.database_url, HTTP_TIMEOUT_SECONDS=TIMEOUT) as web:
        await connect_merchant(web)
        await expires_in(web, timedelta(seconds=-1))
        now = utcnow()
        assert await web.store.take_refresh_lease(SHOP_KEY, now=now, until=now + timedelta(seconds=0.5))
        web.sandbox.faults.add("shopify.access_token", "status_500")
        async with bot_store(web) as store:
            with pytest.raises(ProviderUnavailable, match="has expired and Shopify could not refresh it"):
                await store.get_shopify_token(SHOP)
        assert refresh_calls(web) == 1
        record = await web.store.get_record(SHOP_KEY)
        assert record is not None and record.refresh_lease_until is None  # nothing left behind


async def test_a_process_killed_in_the_middle_of_a_refresh(migrated: Settings) -> None:
    # The killed process and this one both refresh with a 2 s timeout: a 4 s lease each.
    async with running_app(migrated.database_url, HTTP_TIMEOUT_SECONDS="2") as web:
        await connect_merchant(web)
        token = await expires_in(web, timedelta(minutes=2))
        environ = {
            **os.environ,
            **base_environ(DATABASE_URL=migrated.database_url, HTTP_TIMEOUT_SECONDS="2"),
            **provider_environ(),
        }
        child = subprocess.Popen([sys.executable, "-m", "tests.bot.refresh_child", SHOP], cwd=ROOT, env=environ)
        try:
            deadline = time.monotonic() + 20
            while (record := await web.store.get_record(SHOP_KEY)) is None or record.refresh_lease_until is None:
                assert child.poll() is None and time.monotonic() < deadline, "the child never took the lease"
                await asyncio.sleep(0.01)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        lease_until = record.refresh_lease_until
        assert lease_until > utcnow()  # left behind, still running
        async with bot_store(web) as store:
            async with asyncio.timeout(1.0):
                assert await store.get_shopify_token(SHOP) == token  # still valid: handed out at once
            await web.store.set_metadata(SHOP_KEY, expires_at=utcnow() - timedelta(seconds=1))
            fresh = await store.get_shopify_token(SHOP)  # expired: waits out the dead lease, then refreshes
        assert utcnow() > lease_until
        assert fresh != token and fresh in web.sandbox.valid_shopify_tokens(SHOP)
        assert refresh_calls(web) == 1  # the killed process never reached the sandbox
