"""Every health state reached through the real flows and the stand-ins, and said alike to the bot
(PageConnection/ShopConnection .health, .reason; the clients' errors), on the page and in its JSON."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.errors import ProviderUnavailable, TokenRevoked
from service.models import utcnow
from service.settings import Settings
from service.sweep import Sweep
from tests.bot.helpers import SHOP, SHOP_KEY, bot_store, calls, connect_merchant, refresh_calls
from tests.web import connect_facebook, connect_shopify, running_app, status_json

GRAPHQL = {"query": "{ shop { name } }"}
HI = {"recipient": {"id": "7001"}, "message": {"text": "Hi"}}


def item(view: dict, kind: str, name: str) -> dict:
    return next(entry for entry in view[kind] if name in (entry.get("shop"), entry.get("page_id")))


async def test_a_store_whose_access_shopify_withdrew_needs_reconnecting_at_once(migrated: Settings) -> None:
    # The case: Shopify withdrew the app's access; the bot's call is refused (401), gets one
    # refresh, which answers invalid_grant: the store needs reconnecting, on the page and to the bot.
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        web.sandbox.revoke_shopify(SHOP)
        async with bot_store(web) as store:
            async with store.shopify_client(SHOP) as client:
                with pytest.raises(TokenRevoked) as raised:
                    await client.post("graphql.json", json=GRAPHQL)
            assert raised.value.reason == "refresh_refused" and refresh_calls(web) == 1
            shop = await store.shop_connection(SHOP)
            assert shop is not None and (shop.health, shop.reason) == ("needs_reconnect", "refresh_refused")
            # invalid_grant is not retried: the next caller is told at once, and Shopify is not asked.
            with pytest.raises(TokenRevoked, match="needs reconnecting"):
                await store.get_shopify_token(SHOP, refused=shop.token)
            assert refresh_calls(web) == 1
        view = await status_json(web.browser)
        assert view["needs"] == [f"reconnect_shopify:{SHOP}"]
        entry = item(view, "shops", SHOP)
        assert (entry["health"], entry["reason"]) == ("needs_reconnect", "refresh_refused")
        assert view["headline"].startswith("Acme 7Cu19Ngr needs reconnecting: Shopify no longer accepts")
        # Installing again mends it.
        await connect_shopify(web.browser)
        view = await status_json(web.browser)
        assert view["needs"] == [] and item(view, "shops", SHOP)["health"] == "ok"
        assert view["headline"] == (
            "Your bot answers on Acme Shoes, Acme Outlet and Acme Café with products from Acme 7Cu19Ngr."
        )


async def test_a_refused_token_whose_refresh_works_leaves_the_store_fine(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        old = await web.store.get_token(SHOP_KEY)
        web.sandbox.expire_shopify_access(SHOP)  # Shopify refuses the access token; the refresh token works
        async with bot_store(web) as store, store.shopify_client(SHOP) as client:
            assert (await client.post("graphql.json", json=GRAPHQL)).status_code == 200
            shop = await store.shop_connection(SHOP)
        assert refresh_calls(web) == 1
        assert shop is not None and shop.token != old and (shop.health, shop.reason) == ("ok", None)
        assert (await status_json(web.browser))["needs"] == []


@pytest.mark.parametrize(
    ("subcode", "reason", "words"),
    [
        (458, "app_removed", "the app was removed from its Facebook account"),
        (460, "password_changed", "its Facebook password was changed"),
        (463, "token_expired", "its Facebook token has expired"),
        (467, "session_invalid", "its Facebook session has ended (a log-out, or another reason)"),
    ],
)
async def test_graph_190_seen_by_the_bots_client_is_a_named_reason_everywhere(
    migrated: Settings, subcode: int, reason: str, words: str
) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        web.sandbox.invalidate_page_token("102", subcode=subcode)
        async with bot_store(web) as store, store.graph_client("102") as client:
            with pytest.raises(TokenRevoked) as raised:
                await client.post("me/messages", json=HI)
            assert raised.value.reason == reason
            page = await store.page_connection("102")
            assert page is not None and (page.health, page.reason) == ("needs_reconnect", reason)
            assert page.assessment.sentence("Acme Outlet") == f"Acme Outlet needs reconnecting: {words}."
            sent = calls(web, "/me/messages")
            with pytest.raises(TokenRevoked) as again:  # known dead: no request is sent
                await client.post("me/messages", json=HI)
            assert again.value.reason == reason and calls(web, "/me/messages") == sent
        view = await status_json(web.browser)
        assert view["needs"] == ["reconnect_facebook:102"]
        assert view["headline"] == (
            f"Acme Outlet needs reconnecting: {words}. "
            "Your bot answers on Acme Shoes and Acme Café with products from Acme 7Cu19Ngr."
        )


async def test_the_sweep_finds_what_no_bot_asked_about(migrated: Settings) -> None:
    # Each state through debug_token, as the sweep sees it; then Facebook again, which mends them.
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        web.sandbox.invalidate_page_token("101", subcode=460)
        web.sandbox.end_data_access("102", at=web.sandbox.clock() + 5 * 86400)
        web.sandbox.withhold_permission("103", "pages_messaging")
        report = await Sweep(web.store, web.browser).round()  # the browser's client reaches only the stand-ins
        assert report.pages_checked == 3 and sorted(report.changed) == [
            ("101", "needs_reconnect"),
            ("102", "expiring_soon"),
            ("103", "needs_reconnect"),
        ]
        states = {}
        async with bot_store(web) as store:
            for page_id in ("101", "102", "103"):
                page = await store.page_connection(page_id)
                assert page is not None
                states[page_id] = (page.health, page.reason)
        assert states == {
            "101": ("needs_reconnect", "password_changed"),
            "102": ("expiring_soon", "data_access_ending"),
            "103": ("needs_reconnect", "messaging_not_granted"),
        }
        view = await status_json(web.browser)
        assert view["needs"] == ["reconnect_facebook:101", "reconnect_facebook:102", "reconnect_facebook:103"]
        assert view["headline"].startswith("2 connections need reconnecting: Acme Shoes (its Facebook password")
        assert "Until then your bot answers on Acme Outlet without" not in view["headline"]
        assert "Your bot answers on Acme Outlet with products from Acme 7Cu19Ngr." in view["headline"]
        assert "Acme Outlet: Facebook's data access for it ends on" in view["headline"]
        # Logging in with Facebook again gives new tokens, and new tokens start with a clean bill.
        web.sandbox.withheld.clear()
        await connect_facebook(web.browser)
        view = await status_json(web.browser)
        assert view["needs"] == [] and all(page["health"] == "ok" for page in view["pages"])


async def test_a_quiet_store_whose_refresh_keeps_failing_is_flagged_two_weeks_ahead(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        # Nobody refreshed it for 80 days: its refresh token ends in 10; Shopify does not answer.
        await web.store.set_metadata(
            SHOP_KEY, expires_at=utcnow() - timedelta(days=80), refresh_expires_at=utcnow() + timedelta(days=10)
        )
        web.sandbox.faults.add("shopify.access_token", "status_500")
        report = await Sweep(web.store, web.browser).round()
        assert (report.refreshed, report.refresh_failed) == (0, 1)
        async with bot_store(web) as store:
            # Its access token has expired and the cooldown is on: a clear error saying when to try again.
            with pytest.raises(ProviderUnavailable) as raised:
                await store.shop_connection("acme-7cu19ngr")
            assert raised.value.retry_after == 30 and refresh_calls(web) == 1
        view = await status_json(web.browser)
        entry = item(view, "shops", SHOP)
        assert (entry["health"], entry["reason"]) == ("expiring_soon", "refresh_token_ending")
        assert "reconnect the store before then" in view["headline"]
        # The next round, its cooldown over and Shopify back, keeps the chain warm: 90 days again.
        await web.store.set_metadata(SHOP_KEY, refresh_retry_at=utcnow() - timedelta(seconds=1))
        report = await Sweep(web.store, web.browser).round()
        record = await web.store.get_record(SHOP_KEY)
        assert report.refreshed == 1 and record is not None and record.refresh_expires_at is not None
        assert record.refresh_expires_at > utcnow() + timedelta(days=89)
        assert (await status_json(web.browser))["needs"] == []


async def test_what_the_providers_removed_is_told_once(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        body, headers = web.sandbox.shopify_webhook(shop=SHOP, topic="app/uninstalled")
        assert (await web.browser.post("/shopify/webhooks", content=body, headers=headers)).status_code == 200
        signed = web.sandbox.facebook_signed_request({"user_id": web.sandbox.config.facebook_user_id})
        assert (await web.browser.post("/facebook/deauthorize", data={"signed_request": signed})).status_code == 200
        view = await status_json(web.browser)
        told = {(entry["provider"], entry["subject"], entry["health"], entry["reason"]) for entry in view["removed"]}
        assert told == {
            ("shopify", SHOP, "gone", "uninstalled"),
            ("facebook", "101", "gone", "deauthorized"),
            ("facebook", "102", "gone", "deauthorized"),
            ("facebook", "103", "gone", "deauthorized"),
        }
        texts = [message["text"] for message in view["messages"]]
        assert "Acme 7Cu19Ngr is no longer connected: the app was uninstalled from the store." in texts
        assert "Acme Outlet is no longer connected: the app was removed on Facebook." in texts
        assert view["headline"] == "Connect a Shopify store and a Facebook Page so the bot can answer shoppers."
        again = await status_json(web.browser)  # told once
        assert again["removed"] == [] and again["messages"] == []


async def test_health_reaches_a_bot_that_cached_the_connection(migrated: Settings, backend: str) -> None:
    # A bot process holds the Page's connection in its cache; the sweep in another process records a
    # verdict: the bot's next read says so (the verdict's write carries the key to every process).
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        async with bot_store(web) as store:
            assert (await store.page_connection("101")).health == "ok"  # type: ignore[union-attr]
            web.sandbox.invalidate_page_token("101", subcode=458)
            await Sweep(web.store, web.browser).check_page_now("101")
            await seen_health(store, "101", ("needs_reconnect", "app_removed"), backend)


async def seen_health(store: object, page_id: str, expected: tuple[str, str], backend: str) -> None:
    from tests.bot.helpers import seen

    async def probe() -> tuple[str, str | None]:
        page = await store.page_connection(page_id)  # type: ignore[attr-defined]
        return page.health, page.reason

    await seen(probe, expected, backend)
