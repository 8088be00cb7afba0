"""shopify_client and graph_client send only to their provider's host: an absolute URL elsewhere, a path that
climbs out of the shop's Admin base, or a redirect to another origin is refused (ForeignHost) before anything
is sent, so no token leaves, and no answer from elsewhere marks a token dead or starts a refresh."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from service.errors import ForeignHost
from service.settings import Settings
from service.vault import TokenStore
from tests.bot.helpers import SHOP, SHOP_KEY, calls, connect_merchant, refresh_calls
from tests.web import Web, running_app

ELSEWHERE = "elsewhere.example"
MESSAGE = {"recipient": {"id": "7001"}, "message": {"text": "Hi"}}


class WithElsewhere(httpx.AsyncBaseTransport):
    """The sandbox, a sandbox path that redirects to another host, and that host, which answers the way each
    provider refuses a token (Shopify 401, Graph 190) and records whatever reached it."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.reached: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == ELSEWHERE:
            self.reached.append(request)
            if "graph" in request.url.path:
                return httpx.Response(400, json={"error": {"code": 190, "error_subcode": 460, "message": "x"}})
            return httpx.Response(401, json={"errors": "[API] Invalid API key or access token"})
        if request.url.path.endswith("/away"):
            where = "graph" if "/graph/" in request.url.path else "admin"
            return httpx.Response(302, headers={"location": f"https://{ELSEWHERE}/{where}/steal"})
        return await self.web.outbound.handle_async_request(request)


@asynccontextmanager
async def bot(web: Web) -> AsyncIterator[tuple[TokenStore, WithElsewhere]]:
    transport = WithElsewhere(web)
    async with TokenStore.open(web.settings, transport=transport) as store:
        yield store, transport


async def untouched(web: Web, transport: WithElsewhere) -> None:
    """Nothing reached the other host; no refresh; the Page token not marked dead."""
    assert transport.reached == []
    assert refresh_calls(web) == 0
    assert (await web.store.get_record("FACEBOOK_ACCESS_TOKEN_101")).expires_at is None  # type: ignore[union-attr]


async def test_an_absolute_url_on_another_host_is_refused_before_anything_is_sent(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        async with bot(web) as (store, transport):
            async with store.shopify_client(SHOP) as client:
                with pytest.raises(ForeignHost) as raised:
                    await client.get(f"https://{ELSEWHERE}/admin/api/2026-10/shop.json")
                assert raised.value.code == "foreign_host" and ELSEWHERE in raised.value.message
                # The same host as the sandbox, but another shop's Admin base: not this shop's host either.
                with pytest.raises(ForeignHost):
                    await client.get("http://sandbox/shopify/other-shop.myshopify.com/admin/api/2026-10/shop.json")
                with pytest.raises(ForeignHost):
                    await client.get("../../../../other-shop.myshopify.com/admin/api/2026-10/shop.json")
            async with store.graph_client("101") as client:
                with pytest.raises(ForeignHost):
                    await client.post(f"https://{ELSEWHERE}/graph/v25.0/me/messages", json=MESSAGE)
                with pytest.raises(ForeignHost):
                    await client.post("http://sandbox/shopify/x/graph/v25.0/me/messages", json=MESSAGE)
            await untouched(web, transport)
        token = await web.store.get_token(SHOP_KEY)
        assert token is not None and all(token not in str(url) for url in web.outbound.urls)
        assert calls(web, "/shop.json", "GET") == 1  # the connect's own call, none from the bot


async def test_a_redirect_to_another_origin_is_refused_and_carries_no_token(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        async with bot(web) as (store, transport):
            async with store.shopify_client(SHOP) as client:
                with pytest.raises(ForeignHost):
                    await client.get("away", follow_redirects=True)
            async with store.graph_client("101") as client:
                with pytest.raises(ForeignHost):
                    await client.get("away", follow_redirects=True)
                # Not followed, the redirect is just an answer: nothing is marked, nothing goes anywhere.
                response = await client.get("away")
                assert response.status_code == 302
            await untouched(web, transport)


async def test_absolute_urls_on_the_providers_own_host_keep_working(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        async with bot(web) as (store, transport):
            async with store.shopify_client(SHOP) as client:
                # As Shopify's Link pagination hands them back: absolute, on the shop's own Admin host.
                url = f"http://sandbox/shopify/{SHOP}/admin/api/2026-10/graphql.json"
                response = await client.post(url, json={"query": "{ shop { name } }"})
                assert response.status_code == 200
            async with store.graph_client("102") as client:
                # As Graph's paging.next gives them: absolute, on the Graph host, with a stale token in the query.
                response = await client.post("http://sandbox/graph/v25.0/me/messages?access_token=old", json=MESSAGE)
                assert response.status_code == 200 and response.json()["recipient_id"] == "7001"
            assert transport.reached == []
        [sent] = web.sandbox.sent_messages()
        assert sent.page_id == "102"
