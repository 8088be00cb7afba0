"""Refreshes across processes, over loopback HTTP to the stand-in under uvicorn:

- a process SIGKILLed after Shopify answered its refresh and before it stored the pair: the next call
  from another process gets a working token with no reinstall (Shopify's rule since 2026-08-28, which
  the stand-in models; under the old 60-minute rule, only within the hour);
- a failed refresh's cooldown is in the database: another process waits it out too, and is told when
  to try again; it doubles with each failure; invalid_grant is never tried again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from service.errors import ProviderUnavailable, TokenRevoked
from service.models import utcnow
from service.settings import Settings
from service.vault import TokenStore
from tests.command import ROOT, clean_environ
from tests.conftest import base_environ
from tests.reliability.live import LiveWeb, live_app, live_environ
from tests.web import click

SHOP = "acme-crash.myshopify.com"
KEY = "SHOPIFY_ACCESS_TOKEN_acme-crash"
TIMEOUT = 1.0  # HTTP_TIMEOUT_SECONDS everywhere here: a refresh lease of 3 s
DAY = 86400


def child_environ(web: LiveWeb) -> dict[str, str]:
    settings = base_environ(DATABASE_URL=web.settings.database_url, HTTP_TIMEOUT_SECONDS=str(TIMEOUT))
    return clean_environ(**settings, **live_environ(web.sandbox_url))


async def install(web: LiveWeb) -> None:
    browser = web.new_browser()
    consent = await browser.get(f"/shopify/{SHOP}/login")
    assert (await click(browser, consent, "allow")).status_code == 200


def refresh_calls(web: LiveWeb) -> int:
    return sum(("grant_type", "refresh_token") in r.form for r in web.sandbox.requests)


async def token_child(web: LiveWeb) -> dict:
    """Another process asks for the shop's token; what it got (never the token itself)."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.bot.token_child", SHOP],
        cwd=ROOT,
        env=child_environ(web),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def sha256(token: str | None) -> str:
    return hashlib.sha256((token or "").encode()).hexdigest()


async def killed_after_shopify_answered(web: LiveWeb) -> None:
    """A process refreshes the shop's (expired) token; Shopify answers; the process dies before storing."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.bot.refresh_then_die", SHOP],
        cwd=ROOT,
        env=child_environ(web),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), timeout=60)
    finally:
        child.kill()  # SIGKILL: nothing of it runs after Shopify's answer
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert line.split() == ["answered", "200"]


@pytest.mark.parametrize(
    ("window", "later", "recovers"),
    [
        pytest.param(30 * DAY, DAY, True, id="since-2026-08-28-a-day-later"),
        pytest.param(3600, 600, True, id="old-60-minutes-ten-minutes-later"),
        pytest.param(3600, 3700, False, id="old-60-minutes-past-the-hour"),
    ],
)
async def test_a_refresh_lost_to_a_kill_is_redone_with_no_reinstall(
    migrated: Settings, window: int, later: int, recovers: bool
) -> None:
    async with live_app(migrated.database_url, client_timeout=TIMEOUT) as web:
        web.sandbox.config.shopify_refresh_window = window
        await install(web)
        old = await web.store.get_record(KEY)
        assert old is not None and old.refresh_token is not None
        await web.store.set_metadata(KEY, expires_at=utcnow() - timedelta(seconds=1))
        await killed_after_shopify_answered(web)
        # Shopify issued a pair nobody stored: the row still holds the old one (and a dead process's lease).
        orphans = [value for value, issued in web.sandbox.tokens.items() if issued.predecessor == old.refresh_token]
        assert len(orphans) == 2
        left = await web.store.get_record(KEY)
        assert left is not None and (left.value, left.refresh_token) == (old.value, old.refresh_token)
        assert left.refresh_lease_until is not None
        web.sandbox.clock = lambda: time.time() + later  # the next call comes `later` seconds on
        # The next call, from another process (a bot's): it waits out the dead lease, then refreshes.
        got = await token_child(web)
        assert refresh_calls(web) == 2
        if recovers:
            assert set(got) == {"sha256"}
            stored = await web.store.get_record(KEY)
            assert stored is not None and got["sha256"] == sha256(stored.value) != sha256(old.value)
            assert stored.value in web.sandbox.valid_shopify_tokens(SHOP)
            assert not set(orphans) & web.sandbox.valid_shopify_tokens(SHOP)  # the lost pair no longer counts
            # And it works: the Admin API answers, which retires the old refresh token for good.
            async with TokenStore.open(web.settings, transport=web.outbound) as bot, bot.shopify_client(SHOP) as c:
                assert (await c.post("graphql.json", json={"query": "{ shop { name } }"})).status_code == 200
            assert old.refresh_token not in web.sandbox.valid_shopify_refresh_tokens(SHOP)
        else:
            # Past the old rule's hour the used refresh token is spent: only a new install mends it, and
            # the store says so at once.
            assert (got["error"], got["reason"]) == ("token_revoked", "refresh_refused")
            record = await web.store.get_record(KEY)
            assert record is not None and (record.health, record.health_reason) == (
                "needs_reconnect",
                "refresh_refused",
            )


async def test_the_refresh_cooldown_is_shared_by_processes_and_doubles(migrated: Settings) -> None:
    async with live_app(migrated.database_url, client_timeout=TIMEOUT) as web:
        await install(web)
        await web.store.set_metadata(KEY, expires_at=utcnow() - timedelta(seconds=1))
        # This process's refresh fails (Shopify answers 500).
        web.sandbox.faults.add("shopify.access_token", "status_500")
        with pytest.raises(ProviderUnavailable) as raised:
            await web.store.get_shopify_token(SHOP)
        assert raised.value.retry_after == 30 and raised.value.headers == {"Retry-After": "30"}
        assert "try again in 30 s" in raised.value.message and refresh_calls(web) == 1
        # Another process does not try Shopify again: it is told how long to wait, at once.
        started = time.monotonic()
        got = await token_child(web)
        assert got["error"] == "provider_unavailable" and 0 < got["retry_after"] <= 30
        assert refresh_calls(web) == 1 and time.monotonic() - started < 30
        # The cooldown over (moved into the past, as time would), the other process tries: it fails too,
        # and the next wait is twice as long, for this process as well.
        await web.store.set_metadata(KEY, refresh_retry_at=utcnow() - timedelta(seconds=1))
        web.sandbox.faults.add("shopify.access_token", "drop")
        got = await token_child(web)
        assert got["error"] == "provider_unavailable" and got["retry_after"] == 60 and refresh_calls(web) == 2
        with pytest.raises(ProviderUnavailable) as raised:
            await web.store.get_shopify_token(SHOP)
        assert 55 <= (raised.value.retry_after or 0) <= 60 and refresh_calls(web) == 2
        record = await web.store.get_record(KEY)
        assert record is not None and record.refresh_failures == 2
        # Shopify back and the cooldown over: the next call refreshes, and the failures are forgotten.
        await web.store.set_metadata(KEY, refresh_retry_at=utcnow() - timedelta(seconds=1))
        got = await token_child(web)
        record = await web.store.get_record(KEY)
        assert record is not None and got == {"sha256": sha256(record.value)} and refresh_calls(web) == 3
        assert (record.refresh_failures, record.refresh_retry_at, record.health) == (None, None, None)
        # invalid_grant is not retried, by any process.
        web.sandbox.revoke_shopify(SHOP)
        await web.store.set_metadata(KEY, expires_at=utcnow() - timedelta(seconds=1))
        with pytest.raises(TokenRevoked) as refused:
            await web.store.get_shopify_token(SHOP)
        assert refused.value.reason == "refresh_refused" and refresh_calls(web) == 4
        got = await token_child(web)
        assert (got["error"], got["reason"]) == ("token_revoked", "refresh_refused") and refresh_calls(web) == 4
