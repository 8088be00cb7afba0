"""The stand-ins' side of the connections page: apps giving up their access (recorded, and the tokens
dead afterwards), the consent pages in the app's stylesheet, labelled as stand-ins, and Cancel."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator

import httpx
import pytest

from salesbot_sandbox import Sandbox
from tests.test_sandbox import (
    CALLBACK,
    SHOP,
    FakeClock,
    asgi_client,
    graph,
    long_lived_token,
    make_config,
    proof,
    shop_json,
    shopify_code,
    shopify_exchange,
)


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(make_config(service_base_url="http://app.example:5000"), clock=FakeClock())


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(sandbox) as c:
        yield c


async def shopify_tokens(client: httpx.AsyncClient) -> dict:
    code = (await shopify_code(client))["code"]
    return (await shopify_exchange(client, code, expiring="1")).json()


async def revoke_shop(client: httpx.AsyncClient, token: str, shop: str = SHOP) -> httpx.Response:
    return await client.delete(
        f"/shopify/{shop}/admin/api_permissions/current.json", headers={"X-Shopify-Access-Token": token}
    )


async def test_shopify_revoke_kills_every_token_of_the_shop_and_is_recorded(
    client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    tokens = await shopify_tokens(client)
    other = await revoke_shop(client, tokens["access_token"], "other-shop.myshopify.com")
    assert other.status_code == 401 and sandbox.revocations == []  # another shop's token revokes nothing
    response = await revoke_shop(client, tokens["access_token"])
    assert (response.status_code, response.json()) == (200, {})
    assert (await shop_json(client, tokens["access_token"])).status_code == 401
    assert sandbox.valid_shopify_refresh_tokens(SHOP) == set()
    assert (await revoke_shop(client, tokens["access_token"])).status_code == 401  # nothing left to revoke
    listed = (await client.get("/revocations")).json()
    assert [(r["provider"], r["subject"]) for r in listed] == [("shopify", SHOP)]


async def test_facebook_revoke_kills_the_users_tokens_and_needs_the_proof(
    client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    user = await long_lived_token(client)
    page = (await graph(client, "me/accounts", user)).json()["data"][0]["access_token"]
    unproven = await client.delete("/graph/v25.0/9001/permissions", params={"access_token": user})
    assert unproven.status_code == 400 and unproven.json()["error"]["code"] == 100
    with_page_token = await client.delete(
        "/graph/v25.0/9001/permissions", params={"access_token": page, "appsecret_proof": proof(page)}
    )
    assert with_page_token.status_code == 400 and with_page_token.json()["error"]["code"] == 200
    someone_else = await client.delete(
        "/graph/v25.0/7002/permissions", params={"access_token": user, "appsecret_proof": proof(user)}
    )
    assert someone_else.status_code == 400 and sandbox.revocations == []
    response = await client.delete(
        "/graph/v25.0/9001/permissions", params={"access_token": user, "appsecret_proof": proof(user)}
    )
    assert (response.status_code, response.json()) == (200, {"success": True})
    for token in (user, page):
        error = (await graph(client, "me", token)).json()["error"]
        assert (error["code"], error["error_subcode"]) == (190, 460)
    assert [(r.provider, r.subject) for r in sandbox.revocations] == [("facebook", "9001")]


async def test_revoke_faults_answer_before_anything_is_revoked(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    tokens = await shopify_tokens(client)
    sandbox.faults.add("shopify.revoke", "status_500")
    assert (await revoke_shop(client, tokens["access_token"])).status_code == 500
    assert (await shop_json(client, tokens["access_token"])).status_code == 200 and sandbox.revocations == []


async def test_consent_pages_use_the_apps_stylesheet_and_say_they_are_stand_ins(client: httpx.AsyncClient) -> None:
    shopify = await client.get(
        f"/shopify/{SHOP}/admin/oauth/authorize",
        params={"client_id": "shop_key", "scope": "read_products", "redirect_uri": CALLBACK, "state": "s"},
    )
    facebook = await client.get(
        "/facebook/v25.0/dialog/oauth",
        params={"client_id": "4242", "redirect_uri": CALLBACK, "state": "s", "scope": "pages_show_list"},
    )
    for page, provider in ((shopify, "Shopify"), (facebook, "Facebook")):
        assert page.status_code == 200
        assert '<link rel="stylesheet" href="http://app.example:5000/static/app.css">' in page.text
        assert f"Local stand-in for {provider}." in page.text and 'role="note"' in page.text
    # Shopify documents no redirect for a declined install: Cancel goes back to the app's home.
    assert '<a class="button secondary" id="cancel" href="https://salesbot.example/">' in html.unescape(shopify.text)


async def test_page_tasks_can_leave_out_messaging() -> None:
    sandbox = Sandbox(make_config(page_tasks={"102": ["ANALYZE"]}, page_size=10), clock=FakeClock())
    async with asgi_client(sandbox) as client:
        user = await long_lived_token(client)
        pages = (await graph(client, "me/accounts", user)).json()["data"]
    tasks = {page["id"]: page["tasks"] for page in pages}
    assert tasks["102"] == ["ANALYZE"] and "MESSAGING" in tasks["101"] and "MESSAGING" in tasks["103"]
