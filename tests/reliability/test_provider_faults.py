"""Providers failing in every way, over loopback HTTP: a clear error, nothing stored, state spent, others served.

The sandbox runs under uvicorn in a thread, so "slow" really outlasts the client timeout (0.3 s) and
"drop" really closes the socket mid-response.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest

from service.errors import ProviderUnavailable
from service.models import utcnow
from service.settings import Settings
from tests.reliability.live import APP, LiveWeb, live_app
from tests.routes.helpers import callback_params, error_code, shopify_callback, snapshot
from tests.web import choose_pages, click

SLOW = 2.5  # seconds the stand-in sleeps; the client gives up after TIMEOUT
TIMEOUT = 1.0  # generous: a loaded CI machine must not time out the calls that should succeed
EXPECTED = {
    "status_500": (502, "provider_error"),
    "malformed_json": (502, "provider_error"),
    "missing_fields": (502, "provider_error"),
    "slow": (504, "provider_unavailable"),
    "drop": (504, "provider_unavailable"),
    "graph_190": (502, "token_revoked"),
}


def assert_safe_location(response: httpx.Response, web: LiveWeb) -> None:
    """Every redirect the service answers goes to a path of ours or to the configured provider base."""
    for hop in [*response.history, response]:
        location = hop.headers.get("location")
        if location is None or not str(hop.url).startswith(APP):
            continue
        if location.startswith("/"):
            assert not location.startswith(("//", "/\\")), location
        else:
            assert location.startswith(web.sandbox_url + "/"), location


async def consent(browser: httpx.AsyncClient, path: str) -> httpx.Response:
    page = await browser.get(path)
    assert page.status_code == 200 and urlsplit(str(page.url)).netloc != "testserver", page.text
    return page


async def shopify_attempt(web: LiveWeb, shop: str) -> tuple[httpx.AsyncClient, httpx.Response]:
    browser = web.new_browser()
    response = await click(browser, await consent(browser, f"/shopify/{shop}/login"), "allow")
    assert_safe_location(response, web)
    return browser, response


async def facebook_attempt(web: LiveWeb) -> tuple[httpx.AsyncClient, httpx.Response]:
    browser = web.new_browser()
    response = await click(browser, await consent(browser, "/facebook/login"), "allow")
    assert_safe_location(response, web)
    return browser, response


async def assert_refused_and_spent(web: LiveWeb, browser: httpx.AsyncClient, response: httpx.Response, code) -> None:
    status, expected = code
    assert (response.status_code, error_code(response)) == (status, expected), response.text[:300]
    assert "Traceback" not in response.text
    # The callback's state was spent by the attempt: replaying it in the same browser is refused.
    assert response.url.path.endswith("/callback")
    replay = await browser.get(str(response.url))
    assert replay.status_code == 400 and error_code(replay) == "invalid_state"


async def test_shopify_token_exchange_faults(migrated: Settings) -> None:
    async with live_app(migrated.database_url, client_timeout=TIMEOUT) as web:
        kinds = ["status_500", "malformed_json", "missing_fields", "slow", "drop"]
        for n, kind in enumerate(kinds):
            shop = f"faulty-{n}"
            before = await snapshot(web.store)
            web.sandbox.faults.add("shopify.access_token", kind, seconds=SLOW)
            browser, response = await shopify_attempt(web, shop)
            await assert_refused_and_spent(web, browser, response, EXPECTED[kind])
            assert await snapshot(web.store) == before, kind  # no token, no UUID, no account
            # The service keeps serving: the next merchant connects at once.
            _, ok = await shopify_attempt(web, f"healthy-{n}")
            assert ok.status_code == 200 and str(ok.url) == f"{APP}/", kind
            assert await web.store.get_token(f"SHOPIFY_ACCESS_TOKEN_healthy-{n}") is not None
        assert web.sandbox.faults.pending == []
        # Every outbound request went to the sandbox, over loopback.
        assert {url.netloc.decode() for url in web.outbound.urls} == {urlsplit(web.sandbox_url).netloc}


async def test_shopify_4xx_from_the_token_endpoint(migrated: Settings) -> None:
    async with live_app(migrated.database_url, client_timeout=TIMEOUT) as web:
        browser = web.new_browser()
        login = await browser.get("/shopify/acme-4xx/login", follow_redirects=False)
        state = dict(pair.split("=", 1) for pair in urlsplit(login.headers["location"]).query.split("&"))["state"]
        before = await snapshot(web.store)
        # Correctly signed, fresh, our state: but a code Shopify never issued, so its token endpoint answers 400.
        response = await browser.get(shopify_callback(callback_params(state, shop="acme-4xx.myshopify.com")))
        await assert_refused_and_spent(web, browser, response, (502, "provider_error"))
        assert await snapshot(web.store) == before


@pytest.mark.parametrize("endpoint", ["facebook.access_token", "facebook.me", "facebook.accounts"])
async def test_facebook_graph_faults(migrated: Settings, endpoint: str) -> None:
    async with live_app(migrated.database_url, client_timeout=TIMEOUT) as web:
        for kind in ["status_500", "malformed_json", "missing_fields", "slow", "drop", "graph_190"]:
            before = await snapshot(web.store)
            web.sandbox.faults.add(endpoint, kind, seconds=SLOW)
            browser, response = await facebook_attempt(web)
            await assert_refused_and_spent(web, browser, response, EXPECTED[kind])
            assert await snapshot(web.store) == before, kind  # no user token, no half of the Pages
            browser, choice = await facebook_attempt(web)
            assert choice.status_code == 200 and choice.url.copy_with(fragment=None) == f"{APP}/facebook/pages", kind
            ok = await choose_pages(browser, choice)
            assert ok.status_code == 200 and ok.url == f"{APP}/", kind
            pages = [await web.store.get_token(f"PAGE_UUID_{page}") for page in ("101", "102", "103")]
            assert len(set(pages)) == 1 and pages[0] is not None
        assert web.sandbox.faults.pending == []


# --- refresh ------------------------------------------------------------------------------------

SHOP = "acme-refresh.myshopify.com"
KEY = "SHOPIFY_ACCESS_TOKEN_acme-refresh"


async def until(condition, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def refresh_calls(web: LiveWeb) -> int:
    return sum(("grant_type", "refresh_token") in r.form for r in web.sandbox.requests)


@pytest.mark.parametrize("kind", ["slow", "drop", "malformed_json", "missing_fields", "status_500"])
async def test_a_failed_refresh_keeps_the_valid_token_and_waits_before_trying_again(
    migrated: Settings, kind: str
) -> None:
    async with live_app(migrated.database_url, client_timeout=TIMEOUT) as web:
        _, done = await shopify_attempt(web, "acme-refresh")
        assert done.status_code == 200
        old = await web.store.get_record(KEY)
        assert old is not None
        await web.store.store_token(KEY, old.value or "", expires_at=utcnow() + timedelta(minutes=2))
        web.sandbox.faults.add("shopify.access_token", kind, seconds=SLOW)
        calls = refresh_calls(web)
        # The old token is still valid for two minutes: it is handed out, unchanged, three times over.
        for _ in range(3):
            assert await web.store.get_shopify_token(SHOP) == old.value
        assert refresh_calls(web) == calls + 1  # one attempt, then the back-off: no hot loop
        after = await web.store.get_record(KEY)
        assert after is not None
        assert (after.value, after.refresh_token, after.refresh_lease_until) == (old.value, old.refresh_token, None)
        # The back-off is in the row, for every process: the first failure waits 30 s.
        assert after.refresh_failures == 1 and after.refresh_retry_at is not None
        assert timedelta(seconds=25) < after.refresh_retry_at - utcnow() <= timedelta(seconds=30)
        # Later (the back-off over: moved into the past, as time would), the next call refreshes.
        await web.store.set_metadata(KEY, refresh_retry_at=utcnow() - timedelta(seconds=1))
        if kind == "slow":
            # The stand-in did answer, after we had given up: the pair we never received was issued. Since
            # 2026-08-28 Shopify keeps the used refresh token usable until that pair is first used, so the
            # next attempt gets a working pair with it: no reinstall.
            await until(lambda: web.sandbox.tokens[old.refresh_token or ""].first_used_at is not None)
        fresh = await web.store.get_shopify_token(SHOP)
        assert fresh != old.value and fresh in web.sandbox.valid_shopify_tokens(SHOP)
        settled = await web.store.get_record(KEY)
        assert settled is not None and (settled.refresh_failures, settled.refresh_retry_at) == (None, None)


async def test_an_expired_token_whose_refresh_fails_is_not_handed_out(migrated: Settings) -> None:
    async with live_app(migrated.database_url, client_timeout=TIMEOUT) as web:
        await shopify_attempt(web, "acme-refresh")
        old = await web.store.get_record(KEY)
        assert old is not None
        await web.store.store_token(KEY, old.value or "", expires_at=utcnow() - timedelta(seconds=1))
        web.sandbox.faults.add("shopify.access_token", "drop")
        with pytest.raises(ProviderUnavailable) as raised:
            await web.store.get_shopify_token(SHOP)
        assert old.value not in str(raised.value) and (old.refresh_token or "?") not in str(raised.value)
        assert (await web.store.get_record(KEY)).refresh_token == old.refresh_token  # type: ignore[union-attr]
