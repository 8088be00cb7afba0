"""Connection health in the event log (issue 18 beside issue 19): `health_changed`, `refresh_failed` and
`recovered` through the real flows and the stand-ins, each in the transaction that changed the health, by
whoever found it (the sweep, a bot); their words under Recent activity; `health` and `reason` in the
webhook's body and in store.events(); the `health.changed` log line."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from service.errors import TokenRevoked
from service.events import verify_signature
from service.events.webhook import Deliverer
from service.models import utcnow
from service.settings import Settings
from service.sweep import Sweep
from service.vault import TokenStore
from service.vault.event_log import LoggedEvent
from tests.bot.helpers import SHOP, SHOP_KEY, bot_store, connect_merchant
from tests.events.helpers import WEBHOOK_SECRET, fingerprint, receiver
from tests.routes.test_webhooks import send
from tests.web import Web, running_app, status_json

GRAPHQL = {"query": "{ shop { name } }"}


async def since(store: TokenStore, seq: int) -> list[LoggedEvent]:
    return await store.event_log.list(after=seq)


def said(logged: list[LoggedEvent]) -> list[tuple[str, str | None, str, str | None, str | None]]:
    return [(event.kind, event.subject, event.actor, event.health, event.reason) for event in logged]


async def expire_soon(web: Web) -> None:
    """The shop's access token expires within a bot's refresh margin (five minutes)."""
    await web.store.set_metadata(SHOP_KEY, expires_at=utcnow() + timedelta(minutes=1))


async def test_the_sweep_records_what_debug_token_found_and_what_mends(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        before = await web.store.event_log.newest_seq()
        token = await web.store.get_token("FACEBOOK_ACCESS_TOKEN_101")
        web.sandbox.invalidate_page_token("101", subcode=460)
        ends = web.sandbox.clock() + 5 * 86400
        web.sandbox.end_data_access("102", at=ends)
        sweep = Sweep(web.store, web.browser)
        await sweep.round()
        found = await since(web.store, before)
        # Asked again, Facebook says the same: a verdict that changes nothing is no event.
        await sweep.check_page_now("101")
        assert await since(web.store, found[-1].seq) == []
        # The merchant opens the app on Facebook: data access runs 90 days again, and 102 is fine.
        web.sandbox.end_data_access("102", at=web.sandbox.clock() + 90 * 86400)
        assert await sweep.check_page_now("102") == "ok"
        mended = await since(web.store, found[-1].seq)
        words = [entry["words"] for entry in (await status_json(web.browser))["recent_activity"]]
    assert sorted(said(found)) == [
        ("health_changed", "101", "sweep", "needs_reconnect", "password_changed"),
        ("health_changed", "102", "sweep", "expiring_soon", "data_access_ending"),
    ]
    changed = {event.subject: event for event in found}
    assert changed["101"].fingerprint == fingerprint(token)  # type: ignore[arg-type]
    assert changed["101"].name == "Acme Shoes" and changed["101"].account is not None
    until = changed["102"].detail["until"]  # type: ignore[index]
    assert until.startswith(datetime.fromtimestamp(ends, UTC).date().isoformat())  # the date to act before
    assert said(mended) == [("recovered", "102", "sweep", "ok", None)]
    assert words[0].startswith("Acme Outlet works again, ")
    assert any(
        w.startswith("Acme Shoes needs reconnecting: its Facebook password was changed (found by the connection check)")
        for w in words
    )
    assert any(w.startswith(f"Acme Outlet: Facebook's data access for it ends on {until[:10]}; open") for w in words)


async def test_a_failed_refresh_and_the_one_that_works_after_it_are_events_by_the_bot(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        await expire_soon(web)
        before = await web.store.event_log.newest_seq()
        web.sandbox.faults.add("shopify.access_token", "status_500")
        async with bot_store(web) as store:
            stale = await store.get_shopify_token(SHOP)  # Shopify does not answer: the token still works
            failed = await since(web.store, before)
            assert await store.get_shopify_token(SHOP) == stale  # the cooldown is on: not tried, nothing said
            assert await since(web.store, failed[-1].seq) == []
            # The cooldown over (as time would end it) and Shopify back: the next call refreshes.
            await web.store.set_metadata(SHOP_KEY, refresh_retry_at=utcnow() - timedelta(seconds=1))
            fresh = await store.get_shopify_token(SHOP)
            mended = await since(web.store, failed[-1].seq)
        words = [entry["words"] for entry in (await status_json(web.browser))["recent_activity"]]
    assert said(failed) == [("refresh_failed", SHOP, "bot", "ok", "provider_error")]
    detail = failed[0].detail or {}
    assert detail["failures"] == 1 and detail["retry_at"] > failed[0].at.isoformat(timespec="seconds")
    assert fresh != stale
    assert said(mended) == [("refreshed", SHOP, "bot", "ok", None), ("recovered", SHOP, "bot", "ok", None)]
    assert mended[0].fingerprint == fingerprint(fresh)  # type: ignore[arg-type]
    assert mended[1].detail == {"failed_refreshes": 1}
    assert words[:3] == [
        f"Acme 7Cu19Ngr works again, {words[0].rsplit(', ', 1)[1]}",
        f"Acme 7Cu19Ngr: Shopify token renewed automatically, {words[1].rsplit(', ', 1)[1]}",
        "Acme 7Cu19Ngr: Shopify could not renew its token just now; it is tried again by itself, "
        + words[2].rsplit(", ", 1)[1],
    ]


async def test_invalid_grant_is_a_health_change_to_needs_reconnect(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        before = await web.store.event_log.newest_seq()
        web.sandbox.revoke_shopify(SHOP)  # Shopify withdrew the app's access: the refresh answers invalid_grant
        async with bot_store(web) as store, store.shopify_client(SHOP) as client:
            with pytest.raises(TokenRevoked):
                await client.post("graphql.json", json=GRAPHQL)
        logged = await since(web.store, before)
    assert said(logged) == [("health_changed", SHOP, "bot", "needs_reconnect", "refresh_refused")]


async def test_a_bot_listening_to_store_events_hears_the_sweeps_verdict(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        async with bot_store(web) as store:
            first = await store.event_log.newest_seq()
            heard: asyncio.Queue[LoggedEvent] = asyncio.Queue()

            async def listen() -> None:
                async for event in store.events(first, kind="health_changed", provider="facebook"):
                    await heard.put(event)

            listener = asyncio.create_task(listen())
            try:
                web.sandbox.invalidate_page_token("103", subcode=467)
                await Sweep(web.store, web.browser).check_page_now("103")  # the app's process, not the bot's
                event = await asyncio.wait_for(heard.get(), timeout=30)  # a bound: it comes within ms
            finally:
                listener.cancel()
    assert event.seq > first
    assert (event.kind, event.subject, event.health, event.reason) == (
        "health_changed",
        "103",
        "needs_reconnect",
        "session_invalid",
    )
    assert event.as_dict()["health"] == "needs_reconnect" and event.as_dict()["by"]["actor"] == "sweep"


async def test_webhook_bodies_carry_the_health_each_event_leaves(migrated: Settings) -> None:
    with receiver() as endpoint:
        async with running_app(migrated.database_url) as web:
            await connect_merchant(web)
            web.sandbox.invalidate_page_token("101", subcode=458)
            await Sweep(web.store, web.browser).check_page_now("101")
            await send(web, "app/uninstalled")
            async with httpx.AsyncClient(timeout=5.0) as client:
                await Deliverer(web.store, endpoint.url, WEBHOOK_SECRET, client).deliver_due()
    for request in endpoint.requests:
        assert verify_signature(request.body, request.headers["Salesbot-Signature"], WEBHOOK_SECRET)
    bodies = {(body["kind"], body["subject"]): body for body in map(json.loads, [r.body for r in endpoint.requests])}
    health = {key: (body["health"], body["reason"]) for key, body in bodies.items()}
    assert health == {
        ("connected", SHOP): ("ok", None),
        ("connected", "9001"): ("ok", None),
        ("connected", "101"): ("ok", None),
        ("connected", "102"): ("ok", None),
        ("connected", "103"): ("ok", None),
        ("health_changed", "101"): ("needs_reconnect", "app_removed"),
        ("uninstalled", SHOP): ("gone", "uninstalled"),
    }
    assert bodies["health_changed", "101"]["by"]["actor"] == "sweep"


async def test_a_health_change_is_one_log_line_at_warning_when_the_merchant_must_reconnect(
    migrated: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        web.sandbox.invalidate_page_token("101", subcode=460)
        web.sandbox.end_data_access("102", at=web.sandbox.clock() + 5 * 86400)
        with caplog.at_level(logging.INFO, logger="salesbot"):
            await Sweep(web.store, web.browser).round()
    messages = [(record.levelname, record.getMessage()) for record in caplog.records]
    lines = sorted((level, message) for level, message in messages if message.startswith("health."))
    assert lines == [
        ("INFO", "health.changed provider=facebook subject=102 health=expiring_soon reason=data_access_ending"),
        ("WARNING", "health.changed provider=facebook subject=101 health=needs_reconnect reason=password_changed"),
    ]
