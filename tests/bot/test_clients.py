"""shopify_client and graph_client: httpx clients that carry the vault's tokens, renew a refused Shopify
token once, wait out Shopify's throttle once, and turn Graph's answers into the vault's marks and errors."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
from datetime import timedelta

import pytest

from service.errors import NotConfigured, NotFound, RateLimited, TokenRevoked
from service.models import utcnow
from service.settings import Settings
from service.vault import TokenStore
from tests.bot.helpers import SHOP, SHOP_KEY, bot_store, calls, connect_merchant, refresh_calls
from tests.web import FACEBOOK_SECRET, running_app

PRODUCTS = "{ products(first: 3) { edges { node { title } } } }"
GRAPHQL = "/graphql.json"


def titles(body: dict) -> list[str]:
    return [edge["node"]["title"] for edge in body["data"]["products"]["edges"]]


async def test_the_shopify_client_reaches_the_shops_admin_api_with_its_token(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        token = await web.store.get_token(SHOP_KEY)
        async with bot_store(web) as store, store.shopify_client("acme-7cu19ngr") as client:
            assert str(client.base_url) == f"http://sandbox/shopify/{SHOP}/admin/api/2026-10/"
            response = await client.post("graphql.json", json={"query": PRODUCTS})
        assert response.status_code == 200
        assert titles(response.json()) == ["Trail Runner", "Canvas Sneaker", "Wool Socks"]
        sent = [r for r in web.sandbox.requests if r.path.endswith(GRAPHQL)]
        assert len(sent) == 1 and dict(sent[0].headers)["x-shopify-access-token"] == token
        assert all(token not in str(url) for url in web.outbound.urls)  # never in a URL


async def test_a_401_is_healed_by_one_refresh_and_one_retry(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        old = await web.store.get_token(SHOP_KEY)
        web.sandbox.expire_shopify_access(SHOP)  # the vault still thinks it good for an hour
        async with bot_store(web) as store, store.shopify_client(SHOP) as client:
            response = await client.post("graphql.json", json={"query": PRODUCTS})
            assert response.status_code == 200 and len(titles(response.json())) == 3
            assert (calls(web, GRAPHQL), refresh_calls(web)) == (2, 1)
            new = await store.get_shopify_token(SHOP)
        assert new != old and new in web.sandbox.valid_shopify_tokens(SHOP)
        assert (await web.store.get_token(SHOP_KEY)) == new


async def test_a_second_401_raises_instead_of_looping(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        web.sandbox.faults.add("shopify.graphql", "status_401", times=5)
        async with bot_store(web) as store, store.shopify_client(SHOP) as client:
            with pytest.raises(TokenRevoked, match=SHOP):
                await client.post("graphql.json", json={"query": PRODUCTS})
        assert (calls(web, GRAPHQL), refresh_calls(web)) == (2, 1)


async def test_a_refused_token_already_replaced_is_not_refreshed_again(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        old = await web.store.get_token(SHOP_KEY)
        assert old is not None
        async with bot_store(web) as store:
            first = await store.get_shopify_token(SHOP, refused=old)
            # A second caller that was refused the same old token gets the new one, with no second refresh.
            assert await store.get_shopify_token(SHOP, refused=old) == first != old
        assert refresh_calls(web) == 1


async def test_a_throttled_query_is_waited_out_once(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        web.sandbox.faults.add("shopify.graphql", "throttled", seconds=0.05)
        async with bot_store(web) as store, store.shopify_client(SHOP) as client:
            response = await client.post("graphql.json", json={"query": PRODUCTS})
            assert response.status_code == 200 and len(titles(response.json())) == 3
            assert calls(web, GRAPHQL) == 2
            web.sandbox.faults.add("shopify.graphql", "status_429", seconds=0.05)
            response = await client.post("graphql.json", json={"query": PRODUCTS})
            assert response.status_code == 200 and calls(web, GRAPHQL) == 4
            # Throttled again after the one wait: the caller is told, with Shopify's figure.
            web.sandbox.faults.add("shopify.graphql", "throttled", seconds=0.05, times=2)
            with pytest.raises(RateLimited) as raised:
                await client.post("graphql.json", json={"query": PRODUCTS})
            assert raised.value.retry_after == pytest.approx(0.05)
            assert calls(web, GRAPHQL) == 6
            # A wait longer than a request should hold is not slept through.
            web.sandbox.faults.add("shopify.graphql", "status_429", seconds=60)
            with pytest.raises(RateLimited) as raised:
                await client.post("graphql.json", json={"query": PRODUCTS})
            assert raised.value.retry_after == 60 and calls(web, GRAPHQL) == 7
        assert refresh_calls(web) == 0


async def test_unknown_shops_and_pages_are_named(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web, bot_store(web) as store:
        with pytest.raises(NotFound, match=r"nowhere\.myshopify\.com"):
            async with store.shopify_client("nowhere"):
                pass
        with pytest.raises(NotFound, match="Page 555"):
            async with store.graph_client("555"):
                pass
        assert web.outbound.urls == []


async def test_the_graph_client_sends_as_the_page_with_its_proof(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        async with bot_store(web) as store, store.graph_client("102") as client:
            assert str(client.base_url) == "http://sandbox/graph/v25.0/"
            response = await client.post(
                "me/messages", json={"recipient": {"id": "7001"}, "message": {"text": "Hi from the bot"}}
            )
        assert response.status_code == 200 and response.json()["recipient_id"] == "7001"
        [sent] = web.sandbox.sent_messages()
        assert (sent.page_id, sent.psid, sent.text) == ("102", "7001", "Hi from the bot")
        token = await web.store.get_token("FACEBOOK_ACCESS_TOKEN_102")
        assert token is not None
        [request] = [r for r in web.sandbox.requests if r.path.endswith("/me/messages")]
        query = dict(request.query)
        proof = hmac.new(FACEBOOK_SECRET.encode(), token.encode(), hashlib.sha256).hexdigest()
        assert (query["access_token"], query["appsecret_proof"]) == (token, proof)


async def test_graph_error_190_marks_the_page_dead_and_names_it(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        web.sandbox.revoke_facebook_user()  # a password change: every Page token dies, Graph says 190/460
        async with bot_store(web) as store:
            async with store.graph_client("101") as client:
                with pytest.raises(TokenRevoked, match="Page 101") as raised:
                    await client.post("me/messages", json={"recipient": {"id": "7001"}, "message": {"text": "Hi"}})
                assert "subcode 460" in str(raised.value)
                sent = calls(web, "/me/messages")
                # Marked: the next request fails at once, without asking Facebook.
                with pytest.raises(TokenRevoked, match="Page 101"):
                    await client.post("me/messages", json={"recipient": {"id": "7001"}, "message": {"text": "Hi"}})
                assert calls(web, "/me/messages") == sent
            page = await store.page_connection("101")
            assert page is not None and (page.health, page.reason) == ("needs_reconnect", "password_changed")
            assert raised.value.reason == "password_changed"
        # As `tokens check --online` records a dead token: the verdict and its reason, the value kept,
        # the other Pages untouched (nobody asked Facebook about them).
        record = await web.store.get_record("FACEBOOK_ACCESS_TOKEN_101")
        assert record is not None and record.value == page.token
        assert (record.health, record.health_reason, record.expires_at) == ("needs_reconnect", "password_changed", None)
        other = await web.store.page_connection("102")
        assert other is not None and (other.health, other.reason) == ("ok", None)


async def test_a_token_replaced_meanwhile_is_not_marked_dead(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        key = "FACEBOOK_ACCESS_TOKEN_103"
        stale = await web.store.get_token(key)
        await web.store.store_token(key, "EAAP-reconnected")
        async with bot_store(web) as store:
            assert await store.mark_token_dead(key, stale) is False
            assert (await web.store.get_record(key)).health is None  # type: ignore[union-attr]
            assert await store.mark_token_dead(key, "EAAP-reconnected", reason="session_invalid") is True
        marked = await web.store.page_connection("103")
        assert marked is not None and (marked.health, marked.reason) == ("needs_reconnect", "session_invalid")


async def test_graph_rate_limits_raise_with_the_wait_graph_states(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        web.sandbox.faults.add("facebook.messages", "rate_limited")
        async with bot_store(web) as store, store.graph_client("101") as client:
            with pytest.raises(RateLimited, match="Page 101") as raised:
                await client.post("me/messages", json={"recipient": {"id": "7001"}, "message": {"text": "Hi"}})
            # X-Business-Use-Case-Usage: estimated_time_to_regain_access is in minutes.
            assert raised.value.retry_after == 60 and raised.value.headers == {"Retry-After": "60"}
            assert (await store.page_connection("101")).health == "ok"  # type: ignore[union-attr]


async def test_the_graph_client_needs_the_app_secret(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        settings = dataclasses.replace(web.settings, facebook_app_secret=None)
        async with TokenStore.open(settings, transport=web.outbound) as store:
            with pytest.raises(NotConfigured, match="FACEBOOK_APP_SECRET"):
                async with store.graph_client("101"):
                    pass


async def test_no_token_reaches_the_logs(migrated: Settings, caplog: pytest.LogCaptureFixture) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        caplog.set_level(logging.DEBUG)
        await web.store.set_metadata(SHOP_KEY, expires_at=utcnow() + timedelta(minutes=1))
        async with bot_store(web) as store:
            async with store.shopify_client(SHOP) as client:
                await client.post("graphql.json", json={"query": PRODUCTS})
            async with store.graph_client("101") as client:
                await client.post("me/messages", json={"recipient": {"id": "7001"}, "message": {"text": "Hi"}})
            secrets = [await store.get_shopify_token(SHOP), (await store.page_connection("101")).token]  # type: ignore[union-attr]
        assert refresh_calls(web) == 1 and any("graph" in record.getMessage() for record in caplog.records)
        for secret in secrets:
            assert secret and all(secret not in record.getMessage() for record in caplog.records)
