"""Logs an operator can use: one line per outcome with its fields, text or JSON (--log-format, LOG_FORMAT),
every line of a request carrying its id (X-Request-ID, taken when it is a plain token, else added), forged
and stale callbacks at WARNING. A real `salesbot serve` against the sandbox over loopback HTTP."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.routes.helpers import callback_params, shopify_callback
from tests.serving import Served, connect_shop, sandbox_over_http, serving
from tests.web import form_of, status_json

SHOP = "log-shop"
DOMAIN = f"{SHOP}.myshopify.com"


async def connect_with_request_id(served: Served, request_id: str) -> tuple[str, str]:
    """Connect SHOP, the callback sent with X-Request-ID; (the id the callback's answer carried, the account)."""
    async with served.browser() as browser:
        consent = await browser.get(f"/shopify/{SHOP}/login")
        action, fields = form_of(consent, "allow")
        approved = await browser.post(action, data=fields, follow_redirects=False)  # the stand-in's redirect
        callback = await browser.get(
            approved.headers["location"], headers={"X-Request-ID": request_id}, follow_redirects=False
        )
        assert callback.status_code == 303, callback.text
        return callback.headers["x-request-id"], (await status_json(browser))["account"]


def events(lines: list[dict], name: str) -> list[dict]:
    return [line for line in lines if line.get("event") == name]


async def test_json_lines_carry_outcomes_their_fields_and_the_request_id(database_url: str, tmp_path: Path) -> None:
    with sandbox_over_http() as sandbox, serving(database_url, tmp_path, sandbox=sandbox) as served:
        echoed, account = await connect_with_request_id(served, "callback-7f3a")
        async with served.browser() as browser:
            forged = await browser.get(shopify_callback(callback_params("s", DOMAIN), secret="forged"))
            stale = await browser.get(
                shopify_callback(callback_params("s", DOMAIN, timestamp=str(int(time.time()) - 3600)))
            )
            assert (forged.status_code, stale.status_code) == (400, 400)
            replaced = await browser.get("/healthz", headers={"X-Request-ID": "two words\tand a tab"})
            body, headers = sandbox[0].shopify_webhook(shop=DOMAIN, topic="app/uninstalled")
            assert (await browser.post("/shopify/webhooks", content=body, headers=headers)).status_code == 200
        lines = served.lines()
    assert echoed == "callback-7f3a"
    (connected,) = events(lines, "shopify.connected")
    assert (connected["shop"], connected["account"], connected["level"]) == (DOMAIN, account, "INFO")
    assert connected["request_id"] == "callback-7f3a"
    # Every line of that request carries its id: the outcome and the access line at least.
    of_callback = [line for line in lines if line.get("request_id") == "callback-7f3a"]
    assert {line.get("event") for line in of_callback} >= {"shopify.connected"}
    assert any(line["message"].startswith("GET /shopify/callback 303") for line in of_callback)
    refusals = {line["code"]: line for line in events(lines, "oauth.refused")}
    assert refusals.keys() == {"invalid_hmac", "stale_timestamp"}
    assert all(line["level"] == "WARNING" and line["provider"] == "shopify" for line in refusals.values())
    assert refusals["invalid_hmac"]["request_id"] != refusals["stale_timestamp"]["request_id"]
    assert re.fullmatch(r"[0-9a-f]{16}", replaced.headers["x-request-id"])  # not the client's: it was not plain
    (uninstalled,) = events(lines, "webhook.uninstalled")
    assert (uninstalled["shop"], uninstalled["deleted"]) == (DOMAIN, 1)
    assert all(line.get("request_id") for line in lines if line["logger"] == "salesbot" and "GET /" in line["message"])


async def test_log_format_from_the_setting_and_text_lines_with_fields(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "json").mkdir()
    with sandbox_over_http() as sandbox:
        with serving(database_url, tmp_path / "json", sandbox=sandbox, log_format=None, LOG_FORMAT="json") as served:
            async with served.browser() as browser:
                assert (await connect_shop(browser, SHOP)).status_code == 200
            assert events(served.lines(), "shopify.connected")  # JSON, from LOG_FORMAT alone
        with serving(database_url, tmp_path, sandbox=sandbox, log_format="text", migrate=False) as served:
            async with served.browser() as browser:
                assert (await connect_shop(browser, SHOP)).status_code == 200
                account = (await status_json(browser))["account"]
                cancelled = await browser.get("/facebook/callback?error=access_denied&state=x")
                assert cancelled.status_code == 200
            text = served.log.read_text()
    line = next(line for line in text.splitlines() if "shopify.connected" in line)
    assert re.search(
        rf" INFO salesbot request=[0-9a-f]{{16}}: shopify.connected shop={DOMAIN} account={account}$", line
    )
    refused = next(line for line in text.splitlines() if "oauth.refused" in line)
    assert " INFO " in refused and refused.endswith("oauth.refused provider=facebook code=access_denied")
