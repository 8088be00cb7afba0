"""Each kind of event through the real flows (browser, stand-ins, provider webhooks, a bot's store), what
the merchant reads of them under "Recent activity", and erasure of a subject's history on request."""

from __future__ import annotations

import asyncio
import re
import time
from html import unescape

import pytest

from service.errors import TokenRevoked
from service.settings import Settings
from service.vault import TokenStore
from service.vault.event_log import LoggedEvent
from tests.bot.helpers import bot_store, connect_merchant
from tests.events.helpers import WEBHOOK_SECRET, fingerprint, hanging_receiver, raw_deliveries
from tests.routes.test_facebook_routes import deauthorize
from tests.routes.test_refresh import KEY, SHOP, expire_soon
from tests.routes.test_webhooks import send
from tests.web import Web, click, connect_facebook, connect_shopify, running_app, status_json

SHOP_NAME = "Acme 7Cu19Ngr"  # what the stand-in's shop.json calls acme-7cu19ngr


def kinds(logged: list[LoggedEvent]) -> list[tuple[str, str | None, str]]:
    return [(event.kind, event.subject, event.actor) for event in logged]


async def since(store: TokenStore, seq: int) -> list[LoggedEvent]:
    return await store.event_log.list(after=seq)


async def disconnect(web: Web, path: str):
    confirm = await web.browser.get(path)
    return await click(web.browser, confirm, "confirm")


async def test_connecting_reconnecting_and_disconnecting_a_store(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        token = await web.store.get_token(KEY)
        await connect_shopify(web.browser)  # the same store again, from the same browser
        again = await web.store.get_token(KEY)
        account = (await status_json(web.browser))["account"]
        await disconnect(web, f"/shopify/{SHOP}/disconnect")
        logged = await web.store.event_log.list()
    assert kinds(logged) == [("connected", SHOP, "web"), ("reconnected", SHOP, "web"), ("disconnected", SHOP, "web")]
    assert {(event.account, event.name, event.provider) for event in logged} == {(account, SHOP_NAME, "shopify")}
    assert [event.fingerprint for event in logged] == [fingerprint(token), fingerprint(again), fingerprint(again)]
    assert token != again and logged[2].reason == "revoked"  # Shopify took the access back


async def test_recent_activity_tells_the_merchant_in_words_in_html_and_json(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        await disconnect(web, f"/shopify/{SHOP}/disconnect")
        view = await status_json(web.browser)
        page = await web.browser.get("/")
        async with web.new_browser() as stranger:  # another browser, in no account: none of it
            assert (await status_json(stranger))["recent_activity"] == []
            assert "Recent activity" not in (await stranger.get("/")).text
    words = [entry["words"] for entry in view["recent_activity"]]
    assert words[0].startswith(f"{SHOP_NAME} disconnected by you, ") and words[1].startswith(
        f"{SHOP_NAME} connected by you, "
    )
    assert re.fullmatch(r".*, \d{1,2} [A-Z][a-z]{2} \d{2}:\d{2} UTC", words[0])
    assert [entry["kind"] for entry in view["recent_activity"]] == ["disconnected", "connected"]  # newest first
    items = re.findall(r'<li data-kind="(\w+)">([^<]*)</li>', page.text)
    assert [(kind, unescape(text)) for kind, text in items] == [
        (entry["kind"], entry["words"]) for entry in view["recent_activity"]
    ]
    assert 'id="activity-title">Recent activity<' in page.text


async def test_recent_activity_shows_the_last_ten(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        for _ in range(11):
            await connect_shopify(web.browser)
        activity = (await status_json(web.browser))["recent_activity"]
    assert len(activity) == 10 and {entry["kind"] for entry in activity} == {"reconnected"}


async def test_connecting_facebook_and_disconnecting_its_pages(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_facebook(web.browser)
        connected = await web.store.event_log.list()
        before = connected[-1].seq
        await disconnect(web, "/facebook/pages/101/disconnect")
        await disconnect(web, "/facebook/pages/102/disconnect")
        await disconnect(web, "/facebook/pages/103/disconnect")  # the last: the grant goes at Facebook too
        disconnected = await since(web.store, before)
    assert kinds(connected) == [("connected", subject, "web") for subject in ("9001", "101", "102", "103")]
    assert [event.name for event in connected] == ["Demo Merchant", "Acme Shoes", "Acme Outlet", "Acme Café"]
    assert kinds(disconnected) == [("disconnected", subject, "web") for subject in ("101", "102", "103", "9001")]
    assert disconnected[-1].reason == "revoked" and all(event.fingerprint for event in disconnected)


async def test_a_refresh_is_an_event_by_whoever_refreshed(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        await expire_soon(web)
        before = await web.store.event_log.newest_seq()
        fresh = await web.store.get_shopify_token(SHOP)  # the web process's store
        await expire_soon(web)
        async with bot_store(web) as store:
            by_bot = await store.get_shopify_token(SHOP)
        logged = [event for event in await since(web.store, before) if event.kind == "refreshed"]
    assert kinds(logged) == [("refreshed", SHOP, "web"), ("refreshed", SHOP, "bot")]
    assert [event.fingerprint for event in logged] == [fingerprint(fresh), fingerprint(by_bot)]  # type: ignore[arg-type]


async def test_a_page_the_bots_graph_client_finds_dead_is_marked_dead_by_the_bot(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        before = await web.store.event_log.newest_seq()
        token = await web.store.get_token("FACEBOOK_ACCESS_TOKEN_101")
        web.sandbox.revoke_facebook_user()
        async with bot_store(web) as store, store.graph_client("101") as client:
            with pytest.raises(TokenRevoked):
                await client.post("me/messages", json={"recipient": {"id": "7001"}, "message": {"text": "Hi"}})
        (dead,) = await since(web.store, before)
        words = (await status_json(web.browser))["recent_activity"][0]["words"]
    assert (dead.kind, dead.subject, dead.actor) == ("marked_dead", "101", "bot")
    assert (dead.health, dead.reason) == ("needs_reconnect", "password_changed")  # Graph's 190/460, named
    assert dead.fingerprint == fingerprint(token)  # type: ignore[arg-type]
    assert words.startswith("Acme Shoes needs reconnecting: its Facebook password was changed (found by the bot), ")


async def test_an_uninstall_is_an_event_by_the_webhook_once(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        before = await web.store.event_log.newest_seq()
        await send(web, "app/uninstalled", webhook_id="wh-1")
        await send(web, "app/uninstalled", webhook_id="wh-1")  # a duplicate changes nothing, says nothing
        await send(web, "app/uninstalled", webhook_id="wh-2")  # nothing left to delete: nothing happened
        logged = await since(web.store, before)
        words = (await status_json(web.browser))["recent_activity"][0]["words"]
    assert kinds(logged) == [("uninstalled", SHOP, "webhook")]
    assert words.startswith(f"{SHOP_NAME}: the app was uninstalled in Shopify, ")


async def test_shop_redact_erases_the_shops_history_and_leaves_one_event_saying_so(migrated: Settings) -> None:
    async with running_app(
        migrated.database_url,
        EVENTS_WEBHOOK_URL="http://127.0.0.1:9/hooks",
        EVENTS_WEBHOOK_SECRET="whsec-0123456789abcdefghijklmnopqrstuv",
    ) as web:
        await connect_merchant(web)  # the store and three Pages, one account
        await send(web, "app/uninstalled")
        pages_before = [event.id for event in await web.store.event_log.list() if event.provider == "facebook"]
        await send(web, "shop/redact")
        logged = await web.store.event_log.list()
        queued = {row["event_id"] for row in await raw_deliveries(web.store)}
    shop_events = [event for event in logged if event.provider == "shopify"]
    assert kinds(shop_events) == [("redacted", SHOP, "webhook")]
    (redacted,) = shop_events
    assert (redacted.name, redacted.fingerprint) == (None, None)  # nothing of the shop's data but its domain
    assert [event.id for event in logged if event.provider == "facebook"] == pages_before  # other subjects stay
    assert queued == {event.id for event in logged}  # the erased events' deliveries went with them


async def test_deauthorize_is_an_event_for_the_login_and_each_page(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        before = await web.store.event_log.newest_seq()
        await deauthorize(web, {"profile_id": "103"})  # a Page removed the app
        await deauthorize(web, {"user_id": "9001"})
        logged = await since(web.store, before)
    assert kinds(logged) == [
        ("deauthorized", "103", "webhook"),
        ("deauthorized", "9001", "webhook"),
        ("deauthorized", "101", "webhook"),
        ("deauthorized", "102", "webhook"),
    ]
    assert all(event.fingerprint and event.account for event in logged)


async def test_data_deletion_erases_the_users_and_their_pages_history(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        shop_events = [event.id for event in await web.store.event_log.list() if event.provider == "shopify"]
        response = await web.browser.post(
            "/facebook/data-deletion", data={"signed_request": web.sandbox.facebook_signed_request({"user_id": "9001"})}
        )
        assert response.status_code == 200
        logged = await web.store.event_log.list()
    facebook = [event for event in logged if event.provider == "facebook"]
    assert sorted(kinds(facebook)) == sorted(
        [("data_deleted", subject, "webhook") for subject in ("9001", "101", "102", "103")]
    )
    assert all(event.name is None and event.fingerprint is None for event in facebook)
    assert [event.id for event in logged if event.provider == "shopify"] == shop_events


async def test_a_receiver_that_hangs_never_slows_a_merchants_request(migrated: Settings) -> None:
    timeout = 30.0
    with hanging_receiver() as endpoint:
        hook = {"EVENTS_WEBHOOK_URL": endpoint.url, "EVENTS_WEBHOOK_SECRET": WEBHOOK_SECRET}
        async with running_app(migrated.database_url, HTTP_TIMEOUT_SECONDS=str(timeout), **hook) as web:
            await connect_shopify(web.browser)
            assert await asyncio.to_thread(endpoint.received.wait, timeout)  # the worker is stuck on it now
            began = time.monotonic()
            await connect_shopify(web.browser)  # another event, queued behind the stuck one
            await disconnect(web, f"/shopify/{SHOP}/disconnect")
            elapsed = time.monotonic() - began
            pending = await raw_deliveries(web.store)
    assert elapsed < timeout  # the requests did not wait for the receiver (a bound, not a speed)
    assert [row["status"] for row in pending] == ["pending"] * 3  # nothing lost meanwhile
