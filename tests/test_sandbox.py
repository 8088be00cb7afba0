"""The sandbox imitates docs/providers.md; these tests check it against independent re-computations.

Every signature is verified here with hmac/hashlib/base64 directly, and each verifier is first checked
against the documented vector, so a bug shared by the sandbox and the verifier cannot pass unnoticed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import pytest_asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from salesbot_sandbox import Sandbox, SandboxConfig
from tests import vectors

SHOP = "acme-shop.myshopify.com"  # "<shop>/admin" needs base64 padding, which must go
SHOP_SECRET = "shpss_test_secret"
FB_SECRET = "fb_test_secret"
CALLBACK = "https://salesbot.example/auth/shopify/callback"
FB_CALLBACK = "https://salesbot.example/auth/facebook/callback"
START = 1_800_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


# --- independent verifiers, each checked against docs/providers.md ---------------------------------


def shopify_hmac(params: dict[str, str], secret: str) -> str:
    message = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in ("hmac", "signature"))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def proof(token: str, secret: str = FB_SECRET) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def parse_signed_request(signed: str, secret: str) -> dict | None:
    """php-graph-sdk's SignedRequest: split, pad, url-safe decode, HMAC over the payload part as received."""
    encoded_sig, _, payload = signed.partition(".")

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(decode(encoded_sig), expected):
        return None
    data = json.loads(decode(payload))
    return data if data.get("algorithm") == "HMAC-SHA256" else None


def test_verifiers_match_documented_vectors() -> None:
    assert shopify_hmac(dict(vectors.SHOPIFY_PARAMS), vectors.SHOPIFY_SECRET) == vectors.SHOPIFY_HMAC
    no_state = dict(vectors.SHOPIFY_NO_STATE_PARAMS)
    assert shopify_hmac(no_state, vectors.SHOPIFY_SECRET) == vectors.SHOPIFY_NO_STATE_HMAC
    assert proof(vectors.PROOF_TOKEN, vectors.PROOF_SECRET) == vectors.PROOF
    signed = vectors.SIGNED_REQUEST
    assert parse_signed_request(signed, vectors.SIGNED_REQUEST_SECRET) == vectors.SIGNED_REQUEST_PAYLOAD
    assert parse_signed_request(signed, "another_secret") is None


# --- fixtures ------------------------------------------------------------------------------------


def make_config(**overrides: object) -> SandboxConfig:
    values: dict = {"shopify_api_key": "shop_key", "shopify_api_secret": SHOP_SECRET,
                    "facebook_app_id": "4242", "facebook_app_secret": FB_SECRET}
    return SandboxConfig(**(values | overrides))


def asgi_client(sandbox: Sandbox) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(clock: FakeClock) -> Sandbox:
    return Sandbox(make_config(), clock=clock)


@pytest_asyncio.fixture  # not plain pytest.fixture: works under asyncio_mode strict as well as auto
async def client(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(sandbox) as c:
        yield c


# --- Shopify -------------------------------------------------------------------------------------


async def shopify_code(client: httpx.AsyncClient, *, scope: str = "read_products,write_orders",
                       state: str = "st4te") -> dict[str, str]:
    form = {"client_id": "shop_key", "scope": scope, "redirect_uri": CALLBACK, "state": state}
    response = await client.post(f"/shopify/{SHOP}/admin/oauth/authorize/approve", data=form)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return dict(parse_qsl(urlsplit(location).query))


async def shopify_exchange(client: httpx.AsyncClient, code: str, **extra: str) -> httpx.Response:
    form = {"client_id": "shop_key", "client_secret": SHOP_SECRET, "code": code, **extra}
    return await client.post(f"/shopify/{SHOP}/admin/oauth/access_token", data=form)


async def shop_json(client: httpx.AsyncClient, token: str, shop: str = SHOP) -> httpx.Response:
    return await client.get(f"/shopify/{shop}/admin/api/2026-10/shop.json",
                            headers={"X-Shopify-Access-Token": token})


@pytest.mark.asyncio
async def test_shopify_consent_page_and_its_errors(client: httpx.AsyncClient) -> None:
    query = {"client_id": "shop_key", "scope": "read_products,read_orders", "redirect_uri": CALLBACK,
             "state": "<s&t>"}
    page = await client.get(f"/shopify/{SHOP}/admin/oauth/authorize", params=query)
    assert page.status_code == 200
    assert f"Install Salesbot on {SHOP}?" in page.text
    assert "It asks for: read_products, read_orders" in page.text
    assert 'id="allow"' in page.text and 'id="cancel"' in page.text
    assert f'action="/shopify/{SHOP}/admin/oauth/authorize/approve"' in page.text
    assert 'value="&lt;s&amp;t&gt;"' in page.text  # the state travels escaped in a hidden field
    wrong = await client.get(f"/shopify/{SHOP}/admin/oauth/authorize", params=query | {"client_id": "nope"})
    assert wrong.status_code == 400
    bad_shop = await client.get("/shopify/evil.example.com/admin/oauth/authorize", params=query)
    assert bad_shop.status_code == 404


@pytest.mark.asyncio
async def test_shopify_callback_is_signed_as_documented(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    params = await shopify_code(client)
    assert list(params) == ["code", "hmac", "host", "shop", "state", "timestamp"]
    assert params["hmac"] == shopify_hmac(params, SHOP_SECRET)
    assert params["hmac"] != shopify_hmac(params | {"shop": "other.myshopify.com"}, SHOP_SECRET)
    assert "=" not in params["host"]
    host = params["host"] + "=" * (-len(params["host"]) % 4)
    assert base64.b64decode(host, validate=True) == f"{SHOP}/admin".encode()
    assert (params["shop"], params["state"], params["timestamp"]) == (SHOP, "st4te", str(int(START)))
    assert sandbox.shopify_codes[params["code"]].scopes == ["read_products", "write_orders"]


@pytest.mark.asyncio
async def test_shopify_code_is_single_use_and_non_expiring_by_default(client: httpx.AsyncClient,
                                                                      sandbox: Sandbox) -> None:
    code = (await shopify_code(client))["code"]
    wrong_secret = await client.post(f"/shopify/{SHOP}/admin/oauth/access_token",
                                     data={"client_id": "shop_key", "client_secret": "x", "code": code})
    assert wrong_secret.status_code == 400 and wrong_secret.json()["error"] == "invalid_client"
    first = await shopify_exchange(client, code)
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"access_token", "scope"} and body["scope"] == "read_products,write_orders"
    assert body["access_token"].startswith("shpat_")
    again = await shopify_exchange(client, code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_request"
    assert "error_description" in again.json()
    assert sandbox.valid_shopify_tokens(SHOP) == {body["access_token"]}

    ok = await shop_json(client, body["access_token"])
    assert ok.json()["shop"]["myshopify_domain"] == SHOP and ok.json()["shop"]["name"] == "Acme Shop"
    for response in (await shop_json(client, "shpat_forged"), await shop_json(client, body["access_token"],
                                                                              "other.myshopify.com")):
        assert response.status_code == 401
        assert response.json() == {"errors": "[API] Invalid API key or access token (unrecognized login or "
                                             "wrong password)"}
    sandbox.revoke_shopify(SHOP)
    assert (await shop_json(client, body["access_token"])).status_code == 401


@pytest.mark.asyncio
async def test_shopify_expiring_pair_rotates_on_refresh(client: httpx.AsyncClient, sandbox: Sandbox,
                                                        clock: FakeClock) -> None:
    code = (await shopify_code(client))["code"]
    json_body = {"client_id": "shop_key", "client_secret": SHOP_SECRET, "code": code, "expiring": 1}
    first = (await client.post(f"/shopify/{SHOP}/admin/oauth/access_token", json=json_body)).json()
    assert first["expires_in"] == 3600 and first["refresh_token_expires_in"] == 7776000
    assert first["refresh_token"].startswith("shprt_")
    assert sandbox.requests[-1].form[-1] == ("expiring", "1")

    refresh = {"client_id": "shop_key", "client_secret": SHOP_SECRET, "grant_type": "refresh_token",
               "refresh_token": first["refresh_token"]}
    second = (await client.post(f"/shopify/{SHOP}/admin/oauth/access_token", data=refresh)).json()
    assert second["access_token"] not in (first["access_token"], None)
    assert second["refresh_token"] != first["refresh_token"] and second["expires_in"] == 3600
    assert (await shop_json(client, first["access_token"])).status_code == 401  # the old pair died
    assert (await shop_json(client, second["access_token"])).status_code == 200
    reused = await client.post(f"/shopify/{SHOP}/admin/oauth/access_token", data=refresh)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert sandbox.valid_shopify_tokens(SHOP) == {second["access_token"]}
    assert sandbox.valid_shopify_refresh_tokens(SHOP) == {second["refresh_token"]}

    clock.now += 3600
    assert (await shop_json(client, second["access_token"])).status_code == 401  # expired by the clock


@pytest.mark.asyncio
async def test_shopify_expiring_can_be_switched_off(clock: FakeClock) -> None:
    sandbox = Sandbox(make_config(shopify_expiring=False), clock=clock)
    async with asgi_client(sandbox) as client:
        code = (await shopify_code(client))["code"]
        body = (await shopify_exchange(client, code, expiring="1")).json()
    assert set(body) == {"access_token", "scope"}


@pytest.mark.asyncio
async def test_shopify_token_exchange_migrates_and_revokes(client: httpx.AsyncClient) -> None:
    old = (await shopify_exchange(client, (await shopify_code(client))["code"])).json()["access_token"]
    form = {"client_id": "shop_key", "client_secret": SHOP_SECRET,
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": old,
            "subject_token_type": "urn:shopify:params:oauth:token-type:offline-access-token",
            "requested_token_type": "urn:shopify:params:oauth:token-type:offline-access-token",
            "expiring": "1"}
    migrated = await client.post(f"/shopify/{SHOP}/admin/oauth/access_token", data=form)
    assert migrated.status_code == 200 and "refresh_token" in migrated.json()
    assert (await shop_json(client, old)).status_code == 401
    assert (await shop_json(client, migrated.json()["access_token"])).status_code == 200
    twice = await client.post(f"/shopify/{SHOP}/admin/oauth/access_token", data=form)
    assert twice.status_code == 400


# --- Facebook ------------------------------------------------------------------------------------


async def facebook_code(client: httpx.AsyncClient, redirect_uri: str = FB_CALLBACK) -> str:
    form = {"client_id": "4242", "redirect_uri": redirect_uri, "state": "fbstate", "scope": "pages_show_list"}
    response = await client.post("/facebook/v25.0/dialog/oauth/approve", data=form)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(redirect_uri + "?") and location.endswith("#_=_")
    params = dict(parse_qsl(urlsplit(location).query))
    assert params["state"] == "fbstate"
    return params["code"]


async def exchange_facebook(client: httpx.AsyncClient, code: str,
                            redirect_uri: str = FB_CALLBACK) -> httpx.Response:
    return await client.get("/graph/v25.0/oauth/access_token", params={
        "client_id": "4242", "client_secret": FB_SECRET, "redirect_uri": redirect_uri, "code": code})


async def long_lived_token(client: httpx.AsyncClient) -> str:
    short = (await exchange_facebook(client, await facebook_code(client))).json()["access_token"]
    response = await client.get("/graph/v25.0/oauth/access_token", params={
        "grant_type": "fb_exchange_token", "client_id": "4242", "client_secret": FB_SECRET,
        "fb_exchange_token": short})
    assert response.json()["expires_in"] == 5184000 and response.json()["token_type"] == "bearer"
    return response.json()["access_token"]


async def graph(client: httpx.AsyncClient, path: str, token: str, **params: str) -> httpx.Response:
    return await client.get(f"/graph/v25.0/{path}",
                            params={"access_token": token, "appsecret_proof": proof(token), **params})


@pytest.mark.asyncio
async def test_facebook_dialog_approve_and_cancel(client: httpx.AsyncClient) -> None:
    query = {"client_id": "4242", "redirect_uri": FB_CALLBACK, "state": "fbstate", "scope": "pages_show_list"}
    page = await client.get("/facebook/v25.0/dialog/oauth", params=query)
    assert page.status_code == 200
    assert "Demo Merchant: allow Salesbot to manage your Pages?" in page.text
    assert "Acme Café" in page.text and 'id="allow"' in page.text and 'id="cancel"' in page.text
    wrong_app = await client.get("/facebook/v25.0/dialog/oauth", params=query | {"client_id": "1"})
    assert wrong_app.status_code == 400
    await facebook_code(client)
    cancel = await client.post("/facebook/v25.0/dialog/oauth/cancel", data=query)
    assert cancel.status_code == 302
    assert cancel.headers["location"] == (
        FB_CALLBACK + "?error=access_denied&error_code=200&error_description=Permissions+error."
        "&error_reason=user_denied&state=fbstate#_=_")


@pytest.mark.asyncio
async def test_facebook_code_exchange(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    code = await facebook_code(client)
    slash = await exchange_facebook(client, code, FB_CALLBACK + "/")
    assert slash.status_code == 400
    assert slash.json()["error"]["code"] == 100 and slash.json()["error"]["type"] == "OAuthException"
    assert "redirect_uri is identical" in slash.json()["error"]["message"]
    ok = await exchange_facebook(client, code)
    assert ok.status_code == 200
    assert ok.json()["expires_in"] == 5400 and ok.json()["token_type"] == "bearer"
    assert ok.json()["access_token"].startswith("EAA")
    used = await exchange_facebook(client, code)
    assert used.status_code == 400 and used.json()["error"]["code"] == 100
    assert (await exchange_facebook(client, "AQforged")).json()["error"]["code"] == 100
    assert sandbox.valid_facebook_tokens() == {ok.json()["access_token"]}


@pytest.mark.asyncio
async def test_graph_requires_appsecret_proof(client: httpx.AsyncClient) -> None:
    token = await long_lived_token(client)
    missing = await client.get("/graph/v25.0/me", params={"access_token": token, "fields": "id,name"})
    wrong = await client.get("/graph/v25.0/me", params={"access_token": token,
                                                         "appsecret_proof": proof(token, "other")})
    for response in (missing, wrong):
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["code"], error["type"]) == (100, "GraphMethodException")
        assert error["message"] == "Invalid appsecret_proof provided in the API argument"
    me = await graph(client, "me", token, fields="id,name")
    assert me.json() == {"id": "9001", "name": "Demo Merchant"}
    bearer = await client.get("/graph/v25.0/me", params={"appsecret_proof": proof(token)},
                              headers={"Authorization": f"Bearer {token}"})
    assert bearer.status_code == 200


@pytest.mark.asyncio
@pytest.mark.parametrize(("limit", "expected_pages"), [(None, [["101", "102"], ["103"]]),
                                                       ("25", [["101", "102"], ["103"]]),
                                                       ("1", [["101"], ["102"], ["103"]])])
async def test_me_accounts_pages_through_next(client: httpx.AsyncClient, sandbox: Sandbox, limit: str | None,
                                              expected_pages: list[list[str]]) -> None:
    token = await long_lived_token(client)
    fields = "id,name,access_token,category,tasks"
    response = await graph(client, "me/accounts", token, fields=fields, **({"limit": limit} if limit else {}))
    seen: list[list[str]] = []
    rows: list[dict] = []
    while True:
        assert response.status_code == 200
        body = response.json()
        seen.append([row["id"] for row in body["data"]])
        rows += body["data"]
        assert body["paging"]["cursors"]["after"]
        if "next" not in body["paging"]:
            break
        assert body["paging"]["next"].startswith("http://sandbox/graph/v25.0/me/accounts?")
        response = await client.get(body["paging"]["next"])
    assert seen == expected_pages
    assert rows[2]["name"] == "Acme Café"
    assert rows[0]["category"] == "Retail" and "MESSAGING" in rows[0]["tasks"]
    page_token = rows[0]["access_token"]
    assert page_token.startswith("EAAP") and page_token in sandbox.valid_facebook_tokens()
    assert (await graph(client, "me", page_token)).json() == {"id": "101", "name": "Acme Shoes"}
    debug = await client.get("/graph/debug_token", params={"input_token": page_token,
                                                             "access_token": f"4242|{FB_SECRET}"})
    data = debug.json()["data"]
    assert (data["is_valid"], data["type"], data["expires_at"], data["app_id"]) == (True, "PAGE", 0, "4242")
    only_ids = await graph(client, "me/accounts", token, fields="id")
    assert set(only_ids.json()["data"][0]) == {"id"}


@pytest.mark.asyncio
async def test_revoking_the_user_kills_user_and_page_tokens(client: httpx.AsyncClient,
                                                            sandbox: Sandbox) -> None:
    token = await long_lived_token(client)
    page_token = (await graph(client, "me/accounts", token)).json()["data"][0]["access_token"]
    debug = await client.get("/graph/v25.0/debug_token", params={"input_token": token,
                                                                 "access_token": f"4242|{FB_SECRET}"})
    data = debug.json()["data"]
    assert data["is_valid"] is True and data["type"] == "USER" and data["user_id"] == "9001"
    assert data["expires_at"] == int(START) + 5184000 and "pages_show_list" in data["scopes"]

    sandbox.revoke_facebook_user()
    assert sandbox.valid_facebook_tokens() == set()
    for t in (token, page_token):
        error = (await graph(client, "me", t)).json()["error"]
        assert (error["code"], error["error_subcode"], error["type"]) == (190, 460, "OAuthException")
    app_token = f"4242|{FB_SECRET}"
    after = await client.get("/graph/debug_token", params={"input_token": token, "access_token": app_token})
    assert after.json()["data"]["is_valid"] is False and after.json()["data"]["error"]["subcode"] == 460
    wrong_app = await client.get("/graph/debug_token",
                                 params={"input_token": token, "access_token": "4242|nope"})
    assert wrong_app.status_code == 400 and wrong_app.json()["error"]["code"] == 190


@pytest.mark.asyncio
async def test_short_lived_token_expires_by_the_clock(client: httpx.AsyncClient, clock: FakeClock) -> None:
    token = (await exchange_facebook(client, await facebook_code(client))).json()["access_token"]
    assert (await graph(client, "me", token)).status_code == 200
    clock.now += 5400
    error = (await graph(client, "me", token)).json()["error"]
    assert error["code"] == 190


# --- faults --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_fault_status_500_then_recovers(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    code = (await shopify_code(client))["code"]
    sandbox.faults.add("shopify.access_token", "status_500")
    assert (await shopify_exchange(client, code)).status_code == 500
    assert (await shopify_exchange(client, code)).status_code == 200  # the fault did not burn the code


@pytest.mark.asyncio
async def test_fault_malformed_json(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    code = await facebook_code(client)
    sandbox.faults.add("facebook.access_token", "malformed_json")
    response = await exchange_facebook(client, code)
    assert response.status_code == 200 and response.text == '{"access_token": '
    with pytest.raises(json.JSONDecodeError):
        response.json()


@pytest.mark.asyncio
async def test_fault_missing_fields(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    token = await long_lived_token(client)
    sandbox.faults.add("facebook.accounts", "missing_fields", times=2)
    for _ in range(2):
        response = await graph(client, "me/accounts", token)
        assert response.status_code == 200 and "data" not in response.json()
    assert "data" in (await graph(client, "me/accounts", token)).json()


@pytest.mark.asyncio
async def test_fault_slow(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    token = await long_lived_token(client)
    sandbox.faults.add("facebook.me", "slow", seconds=0.2)
    started = time.monotonic()
    response = await graph(client, "me", token)
    assert time.monotonic() - started >= 0.2
    assert response.json()["id"] == "9001"  # slow, but a normal answer


@pytest.mark.asyncio
async def test_fault_drop_over_asgi_transport(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    sandbox.faults.add("shopify.shop", "drop")
    with pytest.raises(httpx.RemoteProtocolError):
        await shop_json(client, "shpat_whatever")
    assert (await shop_json(client, "shpat_whatever")).status_code == 401


@pytest.mark.asyncio
async def test_fault_graph_190(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    token = await long_lived_token(client)
    sandbox.faults.add("facebook.debug_token", "graph_190")
    response = await client.get("/graph/debug_token", params={"input_token": token,
                                                               "access_token": f"4242|{FB_SECRET}"})
    assert response.status_code == 400 and response.json()["error"]["code"] == 190
    assert response.json()["error"]["error_subcode"] == 460
    assert token in sandbox.valid_facebook_tokens()  # only the answer was faked


@pytest.mark.asyncio
async def test_fault_scopes_reduced(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    sandbox.faults.add("shopify.approve", "scopes_reduced")
    params = await shopify_code(client, scope="read_products,write_orders")
    body = (await shopify_exchange(client, params["code"])).json()
    assert body["scope"] == "read_products"


def test_faults_reject_unknown_names_and_clear() -> None:
    sandbox = Sandbox(make_config())
    with pytest.raises(ValueError, match="Unknown fault endpoint"):
        sandbox.faults.add("shopify.nope", "drop")
    with pytest.raises(ValueError, match="does not apply"):
        sandbox.faults.add("shopify.shop", "graph_190")
    sandbox.faults.add("facebook.me", "drop", times=3)
    sandbox.faults.clear()
    assert sandbox.faults.take("facebook.me") is None


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in the backlog until uvicorn has started: no polling needed
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="critical", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.mark.asyncio
async def test_drop_and_slow_under_uvicorn_mounted_at_sandbox(sandbox: Sandbox) -> None:
    outer = Starlette(routes=[Mount("/sandbox", app=sandbox.app)])
    async with serve(outer) as base, httpx.AsyncClient(base_url=base, timeout=5.0) as client:
        page = await client.get(f"/sandbox/shopify/{SHOP}/admin/oauth/authorize",
                                params={"client_id": "shop_key", "redirect_uri": CALLBACK})
        assert f'action="/sandbox/shopify/{SHOP}/admin/oauth/authorize/approve"' in page.text
        assert sandbox.requests[-1].path == f"/shopify/{SHOP}/admin/oauth/authorize"

        sandbox.faults.add("shopify.shop", "drop")
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"/sandbox/shopify/{SHOP}/admin/api/2026-10/shop.json")
        assert (await client.get(f"/sandbox/shopify/{SHOP}/admin/api/2026-10/shop.json")).status_code == 401

        sandbox.faults.add("facebook.me", "slow", seconds=0.5)
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/sandbox/graph/v25.0/me", timeout=0.1)

        token = (await client.get("/sandbox/graph/v25.0/oauth/access_token", params={
            "client_id": "4242", "client_secret": FB_SECRET, "redirect_uri": FB_CALLBACK,
            "code": await facebook_code_via(client)})).json()["access_token"]
        accounts = await client.get("/sandbox/graph/v25.0/me/accounts",
                                    params={"access_token": token, "appsecret_proof": proof(token)})
        assert accounts.json()["paging"]["next"].startswith(f"{base}/sandbox/graph/v25.0/me/accounts?")


async def facebook_code_via(client: httpx.AsyncClient) -> str:
    form = {"client_id": "4242", "redirect_uri": FB_CALLBACK, "state": "s"}
    response = await client.post("/sandbox/facebook/v25.0/dialog/oauth/approve", data=form)
    return dict(parse_qsl(urlsplit(response.headers["location"]).query))["code"]


# --- webhooks and signed requests ----------------------------------------------------------------


def test_shopify_webhook_helper_verifies_independently() -> None:
    sandbox = Sandbox(make_config())
    payload = {"id": 1, "domain": SHOP}
    body, headers = sandbox.shopify_webhook(shop=SHOP, topic="app/uninstalled", payload=payload)
    expected = base64.b64encode(hmac.new(SHOP_SECRET.encode(), body, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(headers["X-Shopify-Hmac-Sha256"], expected)
    assert json.loads(body) == payload
    assert headers["X-Shopify-Topic"] == "app/uninstalled" and headers["X-Shopify-Shop-Domain"] == SHOP
    assert headers["X-Shopify-API-Version"] == "2026-10" and headers["Content-Type"] == "application/json"
    assert len(headers["X-Shopify-Webhook-Id"]) == 36
    _, fixed = sandbox.shopify_webhook(shop=SHOP, topic="shop/redact", payload={}, webhook_id="w-1")
    assert fixed["X-Shopify-Webhook-Id"] == "w-1"


def test_signed_request_helper_matches_php_graph_sdk() -> None:
    sandbox = Sandbox(make_config(), clock=lambda: 1234.9)
    signed = sandbox.facebook_signed_request({"user_id": "9001"})
    assert "=" not in signed
    assert parse_signed_request(signed, FB_SECRET) == {"user_id": "9001", "algorithm": "HMAC-SHA256",
                                                       "issued_at": 1234}
    assert parse_signed_request(signed, "wrong_secret") is None


@pytest.mark.asyncio
async def test_deliver_posts_to_the_service(clock: FakeClock) -> None:
    sandbox = Sandbox(make_config(service_base_url="http://service.test/"), clock=clock)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    body, headers = sandbox.shopify_webhook(shop=SHOP, topic="app/uninstalled", payload={"id": 7})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        response = await sandbox.deliver("/webhooks/shopify", body, headers, client=http)
    assert response.status_code == 200
    assert str(seen[0].url) == "http://service.test/webhooks/shopify" and seen[0].content == body
    assert seen[0].headers["x-shopify-hmac-sha256"] == headers["X-Shopify-Hmac-Sha256"]
    with pytest.raises(RuntimeError, match="service_base_url"):
        await Sandbox(make_config()).deliver("/x", b"", {})


# --- the bot's side: Admin GraphQL, the Send API, Messenger webhooks ------------------------------


async def expiring_access_token(client: httpx.AsyncClient) -> str:
    code = (await shopify_code(client))["code"]
    return (await shopify_exchange(client, code, expiring="1")).json()["access_token"]


async def graphql(client: httpx.AsyncClient, token: str, query: str, **variables: object) -> httpx.Response:
    return await client.post(f"/shopify/{SHOP}/admin/api/2026-10/graphql.json",
                             json={"query": query, "variables": variables}, headers={"X-Shopify-Access-Token": token})


@pytest.mark.asyncio
async def test_graphql_answers_products_with_their_cost_and_refuses_bad_tokens(
        client: httpx.AsyncClient, sandbox: Sandbox, clock: FakeClock) -> None:
    token = await expiring_access_token(client)
    products = "query($first: Int!) { products(first: $first) { edges { node { title } } } }"
    answer = await graphql(client, token, products, first=2)
    assert answer.status_code == 200
    assert [edge["node"]["title"] for edge in answer.json()["data"]["products"]["edges"]] == [
        "Trail Runner", "Canvas Sneaker"]
    cost = answer.json()["extensions"]["cost"]
    assert (cost["requestedQueryCost"], cost["actualQueryCost"]) == (4, 4)
    assert cost["throttleStatus"] == {"maximumAvailable": 1000, "currentlyAvailable": 996, "restoreRate": 50}
    shop = await graphql(client, token, "{ shop { name } }")
    assert shop.json()["data"] == {"shop": {"name": "Acme Shop", "myshopifyDomain": SHOP}}
    for bad in ("shpat_unknown", ""):
        refused = await graphql(client, bad, "{ shop { name } }")
        assert refused.status_code == 401 and refused.json()["errors"].startswith("[API] Invalid API key")
    sandbox.expire_shopify_access(SHOP)  # the hour is up: refused, though the refresh token still works
    assert (await graphql(client, token, "{ shop { name } }")).status_code == 401
    assert sandbox.valid_shopify_refresh_tokens(SHOP)


@pytest.mark.asyncio
async def test_graphql_throttles_an_empty_bucket_and_on_demand(client: httpx.AsyncClient, sandbox: Sandbox,
                                                               clock: FakeClock) -> None:
    token = await expiring_access_token(client)
    big = "{ products(first: 250) { edges { node { title } } } }"
    for _ in range(3):  # 252 points each from a bucket of 1000
        assert "data" in (await graphql(client, token, big)).json()
    throttled = (await graphql(client, token, big)).json()
    assert throttled["errors"][0]["extensions"]["code"] == "THROTTLED" and "data" not in throttled
    status = throttled["extensions"]["cost"]["throttleStatus"]
    assert status["currentlyAvailable"] == 1000 - 3 * 252
    clock.now += (252 - status["currentlyAvailable"]) / status["restoreRate"]  # the documented wait
    assert "data" in (await graphql(client, token, big)).json()
    sandbox.faults.add("shopify.graphql", "throttled", seconds=0.5)
    forced = (await graphql(client, token, big)).json()
    cost = forced["extensions"]["cost"]
    wait = (cost["requestedQueryCost"] - cost["throttleStatus"]["currentlyAvailable"]) / 50
    assert forced["errors"][0]["message"] == "Throttled" and wait == pytest.approx(0.5)
    sandbox.faults.add("shopify.graphql", "status_429", seconds=2)
    limited = await graphql(client, token, "{ shop { name } }")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"


@pytest.mark.asyncio
async def test_send_api_checks_the_page_token_and_its_proof_and_records(client: httpx.AsyncClient,
                                                                       sandbox: Sandbox) -> None:
    user = await long_lived_token(client)
    pages = (await graph(client, "me/accounts", user, fields="id,access_token")).json()["data"]
    page_token = pages[0]["access_token"]
    body = {"recipient": {"id": "7001"}, "messaging_type": "RESPONSE", "message": {"text": "Hello"}}

    async def send(token: str, signature: str, payload: dict = body) -> httpx.Response:
        return await client.post("/graph/v25.0/me/messages", json=payload,
                                  params={"access_token": token, "appsecret_proof": signature})

    sent = await send(page_token, proof(page_token))
    assert sent.status_code == 200 and sent.json()["recipient_id"] == "7001"
    assert [(m.direction, m.page_id, m.psid, m.text) for m in sandbox.messages] == [("out", "101", "7001", "Hello")]
    assert (await send(page_token, proof(page_token, "other"))).json()["error"]["code"] == 100
    assert (await send(user, proof(user))).json()["error"]["code"] == 230  # a user token cannot send as a Page
    assert (await send(page_token, proof(page_token), {"message": {"text": "x"}})).json()["error"]["code"] == 100
    sandbox.faults.add("facebook.messages", "rate_limited")
    limited = await send(page_token, proof(page_token))
    assert limited.json()["error"]["code"] == 32
    usage = json.loads(limited.headers["x-business-use-case-usage"])
    assert usage["101"][0]["estimated_time_to_regain_access"] == 1
    assert len(sandbox.sent_messages()) == 1
    page = await client.get("/messenger")
    assert "Acme Shoes" in page.text and "Hello" in page.text


def test_messenger_webhook_is_signed_over_the_raw_body(sandbox: Sandbox) -> None:
    body, headers = sandbox.messenger_webhook(page_id="101", psid="7001", text="Hi <there>")
    scheme, _, digest = headers["X-Hub-Signature-256"].partition("=")
    assert scheme == "sha256"
    assert hmac.compare_digest(digest, hmac.new(FB_SECRET.encode(), body, hashlib.sha256).hexdigest())
    event = json.loads(body)
    assert event["object"] == "page" and event["entry"][0]["id"] == "101"
    [message] = event["entry"][0]["messaging"]
    assert (message["sender"], message["recipient"], message["message"]["text"]) == (
        {"id": "7001"}, {"id": "101"}, "Hi <there>")
