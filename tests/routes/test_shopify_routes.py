"""Shopify install end to end against the sandbox, and every way a callback is refused."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from service.settings import Settings
from tests.routes.helpers import (
    callback_params,
    count_states,
    error_code,
    shopify_callback,
    snapshot,
    start_shopify,
)
from tests.web import SANDBOX, connect_shopify, running_app, status_json


async def test_install_stores_token_pair_and_links_account(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        done = await connect_shopify(web.browser)
        assert done.status_code == 200 and str(done.url) == "http://testserver/"
        view = await status_json(web.browser)
        record = await web.store.get_record("SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr")
        assert record is not None
        # The stored token is the one the sandbox issued and still considers valid.
        assert web.sandbox.valid_shopify_tokens("acme-7cu19ngr.myshopify.com") == {record.value}
        assert record.refresh_token in web.sandbox.valid_shopify_refresh_tokens("acme-7cu19ngr.myshopify.com")
        assert record.expires_at is not None and record.refresh_expires_at is not None
        assert record.account_uuid == view["account"]
        assert await web.store.get_token("USER_UUID_acme-7cu19ngr") == view["account"]
        assert view["shops"][0]["shop"] == "acme-7cu19ngr.myshopify.com"
        assert view["shops"][0]["scopes"] == "read_products,read_orders"
        page = await web.browser.get("/")
        assert record.value not in page.text and record.refresh_token not in page.text
        # The exchange asked for an expiring offline token.
        exchange = next(r for r in web.sandbox.requests if r.path.endswith("/access_token"))
        assert ("expiring", "1") in exchange.form


@pytest.mark.parametrize(
    "shop",
    [
        "evil.com",
        "acme.myshopify.com.evil.com",
        "a@evil.com",
        "acme.myshopify.com%2Fpath",
        "-acme",
        "acme%2Eevil.com",
        "xn--80ak6aa92e.com",
        "\u0430cme",  # Cyrillic a
    ],
)
async def test_bad_shop_names_get_400_and_no_redirect(migrated: Settings, shop: str) -> None:
    async with running_app(migrated.database_url) as web:
        before = await snapshot(web.store)
        response = await web.browser.get(f"/shopify/{shop}/login", follow_redirects=False)
        assert response.status_code in (400, 404)
        assert "location" not in response.headers
        if response.status_code == 400:
            assert error_code(response) == "invalid_shop"
        assert web.outbound.urls == []
        assert await snapshot(web.store) == before
        assert await count_states(web.store) == 0


async def test_form_login_validates_then_redirects_to_the_canonical_path(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        ok = await web.browser.get(
            "/shopify/login", params={"shop": "https://ACME-7cu19ngr.myshopify.com/"}, follow_redirects=False
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/shopify/acme-7cu19ngr.myshopify.com/login"
        bad = await web.browser.get("/shopify/login", params={"shop": "https://evil.com/"}, follow_redirects=False)
        assert bad.status_code == 400 and "location" not in bad.headers


async def test_login_redirects_to_the_shops_authorize_page(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        response = await web.browser.get("/shopify/ACME-7cu19ngr/login", follow_redirects=False)
        assert response.status_code == 302
        location = urlsplit(response.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == (
            f"{SANDBOX}/shopify/acme-7cu19ngr.myshopify.com/admin/oauth/authorize"
        )
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie


async def rejected(web, url: str, code: str, *, browser=None) -> None:
    before = await snapshot(web.store)
    response = await (browser or web.browser).get(url)
    assert response.status_code == 400, response.text
    assert error_code(response) == code
    assert await snapshot(web.store) == before


async def test_forged_and_tampered_callbacks(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        state = await start_shopify(web.browser)
        await rejected(web, shopify_callback(callback_params(state), secret="not-the-app-secret"), "invalid_hmac")
        tampered = shopify_callback(callback_params(state)).replace("acme-7cu19ngr", "other-shop")
        await rejected(web, tampered, "invalid_hmac")
        stale = callback_params(state, timestamp="1337178173")
        await rejected(web, shopify_callback(stale), "stale_timestamp")
        await rejected(web, shopify_callback(callback_params(state)) + "&code=second", "invalid_callback")
        no_code = {k: v for k, v in callback_params(state).items() if k != "code"}
        await rejected(web, shopify_callback(no_code), "invalid_callback")
        # None of those spent the state.
        assert await count_states(web.store) == 1


async def test_state_is_checked_for_browser_shop_expiry_and_reuse(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        state = await start_shopify(web.browser)
        other = web.new_browser()
        await rejected(web, shopify_callback(callback_params(state)), "invalid_state", browser=other)
        await rejected(web, shopify_callback(callback_params(state, shop="other-shop.myshopify.com")), "invalid_state")
        await rejected(web, shopify_callback(callback_params("made-up-state")), "invalid_state")
        async with web.store.engine.begin() as connection:
            await connection.execute(text("UPDATE oauth_states SET expires_at = '2020-01-01 00:00:00'"))
        await rejected(web, shopify_callback(callback_params(state)), "invalid_state")
        await other.aclose()


async def test_a_replayed_callback_is_refused_but_the_back_button_finds_the_store_connected(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        done = await connect_shopify(web.browser)
        callback_url = next(str(r.url) for r in done.history if "/shopify/callback" in str(r.url))
        before = await snapshot(web.store)
        # The Back button after a finished install: the used state comes back from the browser that used it.
        back = await web.browser.get(callback_url)
        assert back.status_code == 200 and back.url.path == "/", back.text
        assert "acme-7cu19ngr.myshopify.com is already connected" in back.text and "invalid_state" not in back.text
        assert await snapshot(web.store) == before
        # Anyone else replaying it is refused as before: no session, or a session without the store.
        async with web.new_browser() as other:
            await rejected(web, callback_url, "invalid_state", browser=other)
            await connect_shopify(other, "others-shop")
            await rejected(web, callback_url, "invalid_state", browser=other)
        # A script gets the error, whoever it is.
        response = await web.browser.get(callback_url, headers={"accept": "application/json"})
        assert response.status_code == 400 and response.json()["error"] == "invalid_state"


async def test_fewer_scopes_than_asked_stores_nothing(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        web.sandbox.faults.add("shopify.approve", "scopes_reduced")
        before = await snapshot(web.store)
        response = await connect_shopify(web.browser)
        assert response.status_code == 400 and error_code(response) == "scope_mismatch"
        assert "read_orders" in response.text
        assert await snapshot(web.store) == before


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("status_500", 502, "provider_error"),
        ("malformed_json", 502, "provider_error"),
        ("missing_fields", 502, "provider_error"),
    ],
)
async def test_token_exchange_failures_store_nothing(migrated: Settings, fault: str, status: int, code: str) -> None:
    async with running_app(migrated.database_url) as web:
        web.sandbox.faults.add("shopify.access_token", fault)
        before = await snapshot(web.store)
        response = await connect_shopify(web.browser)
        assert response.status_code == status and error_code(response) == code
        assert await snapshot(web.store) == before
        # The state was spent by the attempt: the same callback cannot be tried again.
        assert response.url.path == "/shopify/callback"
        await rejected(web, str(response.url), "invalid_state")
        # And the service still serves the next merchant.
        assert (await connect_shopify(web.browser, "second-shop")).status_code == 200


async def test_missing_settings_name_the_variable(migrated: Settings) -> None:
    async with running_app(migrated.database_url, SHOPIFY_API_KEY="", SHOPIFY_REDIRECT_URI="") as web:
        response = await web.browser.get("/shopify/acme/login", follow_redirects=False)
        assert response.status_code == 503 and error_code(response) == "not_configured"
        assert "SHOPIFY_API_KEY" in response.text and "SHOPIFY_REDIRECT_URI" in response.text
        assert "location" not in response.headers
