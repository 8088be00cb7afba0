"""The HTTP API through a real `salesbot serve` on loopback, against the stand-ins over HTTP: every endpoint,
every error, the scopes, the proxies' refresh and throttle paths, a revoked key refused at once by two
instances, and keys in no log and in no database column."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from service.settings import Settings
from service.vault import TokenStore
from tests.command import salesbot
from tests.conftest import make_settings
from tests.reliability.test_database_outage import allow_connections, terminate_backends
from tests.serving import Served, connect_shop, sandbox_over_http, serving
from tests.web import choose_pages, click, status_json

SHOP = "api-shop"
DOMAIN = f"{SHOP}.myshopify.com"
PAGES = ["101", "102", "103"]
RATE = 40  # API_RATE_PER_MINUTE here: a fresh key's 41st request in a burst is refused
QUERY = json.dumps({"query": "{ products(first: 2) { edges { node { title } } } }"})


def create_key(served: Served, folder: Path, name: str, scope: str) -> str:
    made = salesbot("api-keys", "create", "--name", name, "--scope", scope, cwd=folder, environ=served.environ)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def connect_facebook_over_http(browser: httpx.AsyncClient) -> None:
    consent = await browser.get("/facebook/login")
    assert consent.status_code == 200, consent.text
    chosen = await click(browser, consent, "allow")
    if chosen.url.path == "/facebook/pages":
        chosen = await choose_pages(browser, chosen)
    assert chosen.status_code == 200, chosen.text


@dataclass
class Merchant:
    served: Served
    api: httpx.AsyncClient
    account: str
    read: str
    proxy: str


@asynccontextmanager
async def merchant(database_url: str, folder: Path, **extra: str) -> AsyncIterator[Merchant]:
    """serve with one merchant connected (a store and three Pages in one account), a read key and a proxy key."""
    with sandbox_over_http() as sandbox, serving(database_url, folder, sandbox=sandbox, **extra) as served:
        async with served.browser() as browser:
            assert (await connect_shop(browser, SHOP)).status_code == 200
            await connect_facebook_over_http(browser)
            account = (await status_json(browser))["account"]
        read, proxy = create_key(served, folder, "reader", "read"), create_key(served, folder, "proxier", "proxy")
        async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as api:
            yield Merchant(served, api, account, read, proxy)


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    assert "set-cookie" not in response.headers  # no session, ever
    body = response.json()
    assert body["error"] == code, body
    return body


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


async def test_every_endpoint_with_each_scope(database_url: str, tmp_path: Path) -> None:
    async with merchant(database_url, tmp_path) as m:
        sandbox, api = m.served.sandbox, m.api
        page_tokens = sandbox.valid_facebook_tokens()
        shop_tokens = sandbox.valid_shopify_tokens(DOMAIN)

        as_reader = await api.get("/api/v1/pages/101", headers=bearer(m.read))
        assert as_reader.status_code == 200, as_reader.text
        page = as_reader.json()
        assert (page["page_id"], page["account"], page["shop"], page["health"]) == ("101", m.account, DOMAIN, "ok")
        assert page["token"] in page_tokens and page["reason"] is None
        as_proxy = (await api.get("/api/v1/pages/101", headers=bearer(m.proxy))).json()
        assert "token" not in as_proxy and as_proxy == {k: v for k, v in page.items() if k != "token"}

        shop = (await api.get(f"/api/v1/shops/{SHOP}", headers=bearer(m.read))).json()
        assert (shop["shop"], shop["account"], shop["page_ids"], shop["health"]) == (DOMAIN, m.account, PAGES, "ok")
        assert shop["token"] in shop_tokens and shop["expires_at"] is not None
        shop_for_proxy = (await api.get(f"/api/v1/shops/{DOMAIN}", headers=bearer(m.proxy))).json()
        assert "token" not in shop_for_proxy and shop_for_proxy["page_ids"] == PAGES

        for key in (m.read, m.proxy):
            described = await api.get(f"/api/v1/accounts/{m.account}", headers=bearer(key))
            assert described.status_code == 200, described.text
            body = described.json()
            assert [s["shop"] for s in body["shops"]] == [DOMAIN]
            assert sorted(p["page_id"] for p in body["pages"]) == PAGES
            assert {entry["health"] for entry in body["shops"] + body["pages"]} == {"ok"}
            assert not any(token in described.text for token in page_tokens | shop_tokens)  # never a token

        products = await api.post(f"/api/v1/shops/{SHOP}/graphql", content=QUERY, headers=bearer(m.proxy))
        assert products.status_code == 200, products.text
        assert products.json()["data"]["products"]["edges"]  # Shopify's answer, as it gave it

        message = json.dumps({"recipient": {"id": "psid-7"}, "message": {"text": "Hello from Node"}})
        sent = await api.post("/api/v1/pages/102/messages", content=message, headers=bearer(m.proxy))
        assert sent.status_code == 200, sent.text
        assert sent.json()["recipient_id"] == "psid-7"
        assert [(x.page_id, x.psid, x.text) for x in sandbox.sent_messages("102")] == [
            ("102", "psid-7", "Hello from Node")
        ]
        graph_calls = [r for r in sandbox.requests if r.path.endswith("/me/messages")]
        assert graph_calls and all("appsecret_proof" in dict(r.query) for r in graph_calls)

        # A read key gets tokens but makes no provider call for the bot: the proxies need a proxy key.
        for path, body in ((f"/api/v1/shops/{SHOP}/graphql", QUERY), ("/api/v1/pages/101/messages", message)):
            error_of(await api.post(path, content=body, headers=bearer(m.read)), 403, "insufficient_scope")
        assert len(sandbox.sent_messages()) == 1

        # Same account: fine; another: 409, for the reads and the proxies alike.
        same = await api.get(f"/api/v1/pages/101?account={m.account}", headers=bearer(m.proxy))
        assert same.status_code == 200
        other = str(uuid.uuid4())
        error_of(await api.get(f"/api/v1/pages/101?account={other}", headers=bearer(m.read)), 409, "owned_elsewhere")
        error_of(await api.get(f"/api/v1/shops/{SHOP}?account={other}", headers=bearer(m.read)), 409, "owned_elsewhere")
        refused = await api.post(
            f"/api/v1/shops/{SHOP}/graphql?account={other}", content=QUERY, headers=bearer(m.proxy)
        )
        error_of(refused, 409, "owned_elsewhere")

        document = await api.get("/api/v1/openapi.json")
        assert document.status_code == 200 and document.json()["openapi"] == "3.1.0"

        # Each key's calls are counted and written a few seconds later (service/api_keys.py).
        def counted() -> bool:
            listing = salesbot("api-keys", "list", "--json", cwd=tmp_path, environ=m.served.environ)
            calls = {key["name"]: key for key in json.loads(listing.stdout)}
            return calls["reader"]["calls"] >= 6 and calls["proxier"]["last_used_at"] is not None

        await asyncio.to_thread(wait_until, counted)
        log = m.served.log.read_text()
    for key in (m.read, m.proxy):
        assert key not in log and key.split("_", 2)[2] not in log  # neither the key nor its secret part
    assert "authorization" not in log.lower() and "bearer" not in log.lower()


async def test_every_error_is_the_services_code_as_json(database_url: str, tmp_path: Path) -> None:
    async with merchant(database_url, tmp_path, API_RATE_PER_MINUTE=str(RATE)) as m:
        api = m.api
        missing = error_of(await api.get("/api/v1/pages/101"), 401, "invalid_api_key")
        assert "missing" in missing["message"]
        assert (await api.get("/api/v1/pages/101")).headers["www-authenticate"] == 'Bearer realm="api"'
        prefix = m.read.split("_")[1]
        forged = f"sbk_{prefix}_{'A' * 43}"  # a real prefix, a wrong secret
        for wrong in (forged, "sbk_00000000_" + "B" * 43, "not-a-key", m.read + "x"):
            refused = await api.get("/api/v1/pages/101", headers=bearer(wrong))
            error_of(refused, 401, "invalid_api_key")
            assert refused.headers["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'
        basic = await api.get("/api/v1/pages/101", headers={"authorization": f"Basic {m.read}"})
        error_of(basic, 401, "invalid_api_key")

        for path in (
            "/api/v1/pages/999",
            "/api/v1/pages/abc",
            f"/api/v1/accounts/{uuid.uuid4()}",
            "/api/v1/accounts/x",
            "/api/v1/shops/nowhere",
            "/api/v1/nothing",
        ):
            error_of(await api.get(path, headers=bearer(m.read)), 404, "not_found")
        error_of(
            await api.post("/api/v1/shops/nowhere/graphql", content=QUERY, headers=bearer(m.proxy)), 404, "not_found"
        )
        error_of(await api.get("/api/v1/shops/bad_name!", headers=bearer(m.read)), 400, "invalid_shop")
        not_json = await api.post(f"/api/v1/shops/{SHOP}/graphql", content=b"{", headers=bearer(m.proxy))
        error_of(not_json, 400, "invalid_input")
        huge = await api.post(f"/api/v1/shops/{SHOP}/graphql", content=b" " * 300_000, headers=bearer(m.proxy))
        error_of(huge, 413, "invalid_input")

        # No CORS: a preflight is not answered with any Access-Control header.
        preflight = await api.options(
            "/api/v1/pages/101",
            headers={"origin": "https://elsewhere.example", "access-control-request-method": "GET"},
        )
        assert preflight.status_code == 405
        assert not any(name.startswith("access-control-") for name in preflight.headers)
        answered = await api.get("/api/v1/pages/101", headers={**bearer(m.read), "origin": "https://elsewhere.example"})
        assert answered.status_code == 200 and "access-control-allow-origin" not in answered.headers

        # The per-key limit: a fresh key's burst passes up to API_RATE_PER_MINUTE, then 429 with Retry-After.
        burst = create_key(m.served, tmp_path, "burst", "proxy")
        statuses = [(await api.get("/api/v1/pages/101", headers=bearer(burst))).status_code for _ in range(RATE)]
        assert statuses == [200] * RATE
        limited = await api.get("/api/v1/pages/101", headers=bearer(burst))
        error_of(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 2  # one request's worth of a minute's refill
        assert (await api.get("/api/v1/pages/101", headers=bearer(m.proxy))).status_code == 200  # other keys go on

        # The provider's own limit, handed on: Graph's stated wait (a minute), Shopify's 429 asking for 30 s.
        m.served.sandbox.faults.add("facebook.messages", "rate_limited")
        message = json.dumps({"recipient": {"id": "psid-1"}, "message": {"text": "hi"}})
        graph_limited = await api.post("/api/v1/pages/101/messages", content=message, headers=bearer(m.proxy))
        error_of(graph_limited, 429, "rate_limited")
        assert graph_limited.headers["retry-after"] == "60"
        m.served.sandbox.faults.add("shopify.graphql", "status_429", seconds=30)
        throttled = await api.post(f"/api/v1/shops/{SHOP}/graphql", content=QUERY, headers=bearer(m.proxy))
        error_of(throttled, 429, "rate_limited")
        assert throttled.headers["retry-after"] == "30"

        # Facebook says the Page token is dead: 502 token_revoked with the reason; the health says so after.
        m.served.sandbox.faults.add("facebook.messages", "graph_190")
        dead = await api.post("/api/v1/pages/103/messages", content=message, headers=bearer(m.proxy))
        assert error_of(dead, 502, "token_revoked")["reason"] == "password_changed"
        after = (await api.get("/api/v1/pages/103", headers=bearer(m.proxy))).json()
        assert (after["health"], after["reason"]) == ("needs_reconnect", "password_changed")
        assert m.served.sandbox.sent_messages() == []
        log = m.served.log.read_text()
    assert m.read not in log and m.proxy not in log and burst not in log


async def test_the_shopify_proxy_refreshes_a_refused_token_once_and_waits_out_a_short_throttle(
    database_url: str, tmp_path: Path
) -> None:
    async with merchant(database_url, tmp_path) as m:
        sandbox, api = m.served.sandbox, m.api
        before = sandbox.valid_shopify_tokens(DOMAIN)

        def graphql_calls() -> int:
            return sum(r.path.endswith("/graphql.json") for r in sandbox.requests)

        def refreshes() -> int:
            return sum(("grant_type", "refresh_token") in r.form for r in sandbox.requests)

        sandbox.faults.add("shopify.graphql", "status_401")
        calls, refreshed = graphql_calls(), refreshes()
        answered = await api.post(f"/api/v1/shops/{SHOP}/graphql", content=QUERY, headers=bearer(m.proxy))
        assert answered.status_code == 200, answered.text
        assert answered.json()["data"]["products"]["edges"]
        assert (graphql_calls() - calls, refreshes() - refreshed) == (2, 1)  # refused, refreshed once, retried
        after = sandbox.valid_shopify_tokens(DOMAIN)
        assert after and after != before  # a new token, stored; the bot never saw either

        sandbox.faults.add("shopify.graphql", "throttled", seconds=0.3)
        calls = graphql_calls()
        waited = await api.post(f"/api/v1/shops/{SHOP}/graphql", content=QUERY, headers=bearer(m.proxy))
        assert waited.status_code == 200 and waited.json()["data"]["products"]["edges"], waited.text
        assert graphql_calls() - calls == 2  # throttled, waited out once, asked again

        sandbox.faults.add("shopify.graphql", "status_401", times=2)
        twice = await api.post(f"/api/v1/shops/{SHOP}/graphql", content=QUERY, headers=bearer(m.proxy))
        assert error_of(twice, 502, "token_revoked")["reason"] == "token_refused"


@pytest.mark.postgres
async def test_a_revoked_key_is_refused_at_once_by_every_instance(scratch_postgres: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        sandbox_over_http() as sandbox,
        serving(scratch_postgres, tmp_path / "a", sandbox=sandbox, name="a") as first,
        serving(scratch_postgres, tmp_path / "b", sandbox=sandbox, name="b", migrate=False) as second,
    ):
        async with first.browser() as browser:
            assert (await connect_shop(browser, SHOP)).status_code == 200
        key = create_key(first, tmp_path / "a", "short-lived", "read")
        async with httpx.AsyncClient(timeout=30) as client:
            for served in (first, second):  # both have seen the key: any cache would hold it now
                for _ in range(3):
                    answer = await client.get(f"{served.base_url}/api/v1/shops/{SHOP}", headers=bearer(key))
                    assert answer.status_code == 200, answer.text
            revoked = salesbot("api-keys", "revoke", "short-lived", cwd=tmp_path / "a", environ=first.environ)
            assert revoked.returncode == 0, revoked.stderr
            for served in (second, first):  # no wait: the very next request on each instance
                refused = await client.get(f"{served.base_url}/api/v1/shops/{SHOP}", headers=bearer(key))
                error_of(refused, 401, "invalid_api_key")
        for served in (first, second):
            assert key not in served.log.read_text()


@pytest.mark.postgres
def test_an_unreachable_database_is_503_json_for_the_api(scratch_postgres: str, tmp_path: Path) -> None:
    database = str(make_url(scratch_postgres).database)
    with sandbox_over_http() as sandbox, serving(scratch_postgres, tmp_path, sandbox=sandbox) as served:
        key = create_key(served, tmp_path, "bot", "proxy")
        with httpx.Client(base_url=served.base_url, timeout=30) as api:
            assert api.get("/api/v1/pages/101", headers=bearer(key)).status_code == 404  # nothing connected
            try:
                allow_connections(database, False)
                terminate_backends(database)
                down = api.get("/api/v1/pages/101", headers=bearer(key))  # no Accept header: JSON all the same
                error_of(down, 503, "database_unavailable")
                assert int(down.headers["retry-after"]) >= 1
            finally:
                allow_connections(database, True)
            assert api.get("/api/v1/pages/101", headers=bearer(key)).status_code == 404  # served again, no restart


async def test_calls_made_just_before_serve_stops_are_counted(database_url: str, tmp_path: Path) -> None:
    """Uses are written every few seconds and once more when serve stops: none is lost to a stop."""
    with sandbox_over_http() as sandbox, serving(database_url, tmp_path, sandbox=sandbox) as served:
        key = create_key(served, tmp_path, "counted", "proxy")
        async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as api:
            for _ in range(3):
                assert (await api.get("/api/v1/pages/101", headers=bearer(key))).status_code == 404
    listing = salesbot("api-keys", "list", "--json", cwd=tmp_path, environ=served.environ)
    assert listing.returncode == 0, listing.stderr
    (counted,) = json.loads(listing.stdout)
    assert counted["calls"] == 3 and counted["last_used_at"] is not None


async def test_keys_are_stored_as_digests_only(migrated: Settings, tmp_path: Path) -> None:
    """What the database holds after the API was used: no key in clear in any table the API writes."""
    from service import api_keys

    async with TokenStore.open(migrated, actor="cli") as store:
        _made, key = await api_keys.create(store, name="node", scope="read")
        usage = api_keys.Usage(store)
        caller = await api_keys.check(store, f"Bearer {key}")
        assert caller is not None and caller.scope == "read"
        usage.note(caller.prefix)
        await usage.flush()
        rows = await store.query("SELECT * FROM api_keys", {})
        logged = await store.query("SELECT * FROM connection_events", {})
    held = json.dumps([list(row) for row in rows + logged], default=str)
    assert key not in held and key.split("_", 2)[2] not in held
    assert [row[-1] for row in rows] == [1]  # calls


def test_the_settings_refuse_a_rate_that_is_not_a_whole_positive_number(database_url: str) -> None:
    from service.errors import SettingsError

    assert make_settings(database_url).api_rate_per_minute == 600
    assert make_settings(database_url, API_RATE_PER_MINUTE="5").api_rate_per_minute == 5
    for bad in ("0", "-1", "1.5", "many"):
        with pytest.raises(SettingsError, match="API_RATE_PER_MINUTE must be a whole number"):
            make_settings(database_url, API_RATE_PER_MINUTE=bad)
