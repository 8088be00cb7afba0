"""/metrics: Prometheus's text format, read back with prometheus_client's own parser. Behind METRICS_TOKEN
(a bearer token) or on `serve --metrics-port` (loopback); under --workers, every worker's samples add up.

In this process the samples accumulate from test to test, so the in-process case compares a scrape with
the one before it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service import health_gauge, metrics
from service.errors import TokenRevoked
from service.models import utcnow
from service.settings import Settings
from service.sweep import Sweep
from tests.bot.helpers import SHOP, SHOP_KEY, bot_store, connect_merchant
from tests.demo_server import free_port
from tests.routes.helpers import callback_params, shopify_callback
from tests.serving import sandbox_over_http, serving
from tests.web import connect_facebook, connect_shopify, running_app

TOKEN = "metrics-bearer-token-0123456789"
OUTCOMES = ("refreshed", "failed", "refused", "cooldown")  # what a Shopify refresh comes to (vault/refresh.py)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(browser: httpx.AsyncClient) -> tuple[str, Samples]:
    response = await browser.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == metrics.CONTENT_TYPE  # what prometheus_client says it writes
    return response.text, parse(response.text)


async def test_a_scrape_counts_routes_outcomes_provider_calls_writes_and_connections(migrated: Settings) -> None:
    async with running_app(migrated.database_url, METRICS_TOKEN=TOKEN) as web:
        _, before = await scrape(web.browser)
        assert (await connect_shopify(web.browser, "metric-shop")).status_code == 200
        assert (await connect_facebook(web.browser)).status_code == 200
        forged = await web.browser.get(
            shopify_callback(callback_params("s", "metric-shop.myshopify.com"), secret="forged")
        )
        assert forged.status_code == 400
        await web.store.mark_token_dead("FACEBOOK_ACCESS_TOKEN_101")  # the bot found this Page's token dead
        await health_gauge.count_and_set(web.store)  # what the leader does every minute
        for _ in range(3):  # a miss, then hits: handed to the metrics as the next request ends
            assert await web.store.get_shopify_token("metric-shop") is not None
        assert (await web.browser.get("/healthz")).status_code == 200
        text, after = await scrape(web.browser)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    login = {"route": "/shopify/{shop}/login", "method": "GET", "status": "302"}
    assert grew("salesbot_http_requests_total", **login) == 1
    assert grew("salesbot_http_request_seconds_count", route="/shopify/{shop}/login") == 1
    assert "metric-shop" not in text  # routes are templates: no shop, path or token in any label
    assert grew("salesbot_oauth_outcomes_total", provider="shopify", outcome="connected") == 1
    assert grew("salesbot_oauth_outcomes_total", provider="facebook", outcome="connected") == 1
    assert grew("salesbot_oauth_outcomes_total", provider="shopify", outcome="invalid_hmac") == 1
    assert grew("salesbot_provider_calls_total", provider="shopify", status="200") >= 2  # token exchange, shop.json
    assert grew("salesbot_provider_call_seconds_count", provider="facebook") >= 3
    assert grew("salesbot_write_batch_size_count") >= 3 and grew("salesbot_write_batch_size_sum") >= 3
    assert grew("salesbot_database_seconds_count", operation="write") >= 3
    assert grew("salesbot_cache_lookups_total", result="miss") >= 1
    assert grew("salesbot_cache_lookups_total", result="hit") >= 2
    assert value(after, "salesbot_connections", provider="shopify", state="ok") == 1
    assert value(after, "salesbot_connections", provider="facebook", state="needs_reconnect") == 1
    assert value(after, "salesbot_connections", provider="facebook", state="ok") >= 1


async def test_metrics_need_the_bearer_token_and_are_off_without_one(migrated: Settings) -> None:
    async with running_app(migrated.database_url, METRICS_TOKEN=TOKEN) as web:
        for headers in ({}, {"authorization": "Bearer wrong-token-0123456789"}, {"authorization": TOKEN}):
            refused = await web.browser.get("/metrics", headers={**headers, "accept": "application/json"})
            assert refused.status_code == 401 and refused.json()["error"] == "metrics_unauthorized"
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "salesbot_" not in refused.text
    async with running_app(migrated.database_url) as web:
        assert (await web.browser.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})).status_code == 404


def listening_addresses(port: int) -> set[str]:
    """Local addresses listening on `port` (IPv4), from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_under_workers_the_metrics_port_adds_up_every_worker_and_its_folder_goes(
    database_url: str, tmp_path: Path
) -> None:
    metrics_port = free_port()
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    requests = 40
    with (
        sandbox_over_http() as sandbox,
        serving(
            database_url,
            tmp_path,
            "--workers",
            "2",
            "--metrics-port",
            str(metrics_port),
            sandbox=sandbox,
            TMPDIR=str(temporary),
        ) as served,
    ):
        (folder,) = temporary.iterdir()
        assert folder.name.startswith("salesbot-metrics-")
        for _ in range(requests):  # a new connection each: both workers take some
            assert httpx.get(f"{served.base_url}/healthz").status_code == 200
        assert httpx.get(f"{served.base_url}/metrics").status_code == 404  # no METRICS_TOKEN: not on the port
        scraped = parse(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
        assert listening_addresses(metrics_port) == {"127.0.0.1"}
        workers = {line["pid"] for line in served.lines() if line["message"].startswith("GET /healthz")}
    healthz = {"route": "/healthz", "method": "GET", "status": "200"}
    # Every answer counted once, whichever worker gave it (plus serve's own start-up check, not a request).
    assert value(scraped, "salesbot_http_requests_total", **healthz) >= requests
    assert value(scraped, "salesbot_http_requests_total", **healthz) == len(
        [line for line in served.lines() if line["message"].startswith("GET /healthz 200")]
    )
    assert len(workers) == 2, workers
    assert list(temporary.iterdir()) == []  # serve removed its metrics folder on the way out


def test_one_worker_stopped_by_sigterm_removes_its_metrics_folder(database_url: str, tmp_path: Path) -> None:
    # uvicorn re-raises SIGTERM once it has drained; serve must still unwind and clean up.
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    with sandbox_over_http() as sandbox, serving(database_url, tmp_path, sandbox=sandbox, TMPDIR=str(temporary)):
        assert len(list(temporary.iterdir())) == 1
    assert list(temporary.iterdir()) == []


async def test_refreshes_by_outcome_the_sweeps_provider_calls_and_connections_by_health(migrated: Settings) -> None:
    async with running_app(migrated.database_url, METRICS_TOKEN=TOKEN) as web:
        await connect_merchant(web)
        _, before = await scrape(web.browser)
        # The sweep: a shop a bot uses, due within its lead, refreshed; three Pages asked about.
        async with bot_store(web) as store:
            await store.get_shopify_token(SHOP)  # noted as in use
        await web.store.set_metadata(SHOP_KEY, expires_at=utcnow() + timedelta(minutes=8))
        web.sandbox.invalidate_page_token("101", subcode=460)
        web.sandbox.end_data_access("102", at=web.sandbox.clock() + 5 * 86400)
        report = await Sweep(web.store, web.browser).round()
        assert (report.refreshed, report.pages_checked) == (1, 3)
        debug_tokens = sum(request.path.endswith("/debug_token") for request in web.sandbox.requests)
        # A refresh Shopify does not answer, then one not tried while the cooldown is on.
        await web.store.set_metadata(SHOP_KEY, expires_at=utcnow() + timedelta(minutes=1))
        web.sandbox.faults.add("shopify.access_token", "status_500")
        token = await web.store.get_shopify_token(SHOP)
        assert await web.store.get_shopify_token(SHOP) == token
        # Shopify withdrew the access: the refresh after its 401 answers invalid_grant.
        web.sandbox.revoke_shopify(SHOP)
        await web.store.set_metadata(SHOP_KEY, refresh_retry_at=utcnow() - timedelta(seconds=1))
        with pytest.raises(TokenRevoked):
            await web.store.get_shopify_token(SHOP, refused=token)
        await health_gauge.count_and_set(web.store)
        _, after = await scrape(web.browser)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    refreshes = {outcome: grew("salesbot_token_refreshes_total", outcome=outcome) for outcome in OUTCOMES}
    assert refreshes == {"refreshed": 1, "failed": 1, "refused": 1, "cooldown": 1}
    assert debug_tokens == 3 and grew("salesbot_provider_calls_total", provider="facebook", status="200") == 3
    assert grew("salesbot_provider_calls_total", provider="shopify", status="500") == 1
    connections = {
        (provider, state): value(after, "salesbot_connections", provider=provider, state=state)
        for provider in ("shopify", "facebook")
        for state in ("ok", "expiring_soon", "needs_reconnect")
    }
    assert connections == {
        ("shopify", "ok"): 0,
        ("shopify", "expiring_soon"): 0,
        ("shopify", "needs_reconnect"): 1,
        ("facebook", "ok"): 1,
        ("facebook", "expiring_soon"): 1,
        ("facebook", "needs_reconnect"): 1,
    }
