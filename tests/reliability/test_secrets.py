"""No secret leaves the vault: every flow and failure, then a scan of logs, output, responses and exceptions.

Recognisable values: the settings' secrets (tests/web.py, tests/conftest.py) and every token and code the
sandbox issued during the run (it keeps them all). Logging is captured at DEBUG for every logger
(salesbot, uvicorn, httpx, httpcore, sqlalchemy ...), the same level an operator would use to debug.
"""

from __future__ import annotations

import logging
import sqlite3
import traceback
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

import service.app
from service import migrate
from service.crypto import KeyRing
from service.errors import ServiceError
from service.logs import JsonFormatter, TextFormatter, redact_http_logs
from service.models import utcnow
from service.settings import Settings, sqlite_url
from tests.conftest import PRIMARY_KEY, STATE_SECRET, make_settings
from tests.reliability.live import APP, LiveWeb, live_app
from tests.routes.helpers import callback_params, shopify_callback
from tests.web import FACEBOOK_SECRET, SHOPIFY_SECRET, choose_pages, click

SLOW = 2.0  # past the client timeout below (0.8 s), which a loaded machine must not reach by itself


async def run_everything(web: LiveWeb, responses: list[httpx.Response]) -> None:
    async def record(response: httpx.Response) -> None:
        await response.aread()
        responses.append(response)

    def browser() -> httpx.AsyncClient:
        client = web.new_browser()
        client.event_hooks["response"].append(record)
        return client

    async def shopify(shop: str) -> httpx.Response:
        b = browser()
        return await click(b, await b.get(f"/shopify/{shop}/login"), "allow")

    async def facebook(button: str = "allow") -> httpx.Response:
        b = browser()
        return await click(b, await b.get("/facebook/login"), button)

    assert (await shopify("secret-shop")).status_code == 200
    assert (await facebook()).status_code == 200
    await facebook("cancel")
    for n, kind in enumerate(["status_500", "malformed_json", "missing_fields", "slow", "drop"]):
        web.sandbox.faults.add("shopify.access_token", kind, seconds=SLOW)
        assert (await shopify(f"faulty-{n}")).status_code in (502, 504)
    for endpoint in ("facebook.access_token", "facebook.me", "facebook.accounts"):
        for kind in ["status_500", "malformed_json", "missing_fields", "slow", "drop", "graph_190"]:
            web.sandbox.faults.add(endpoint, kind, seconds=SLOW)
            assert (await facebook()).status_code in (502, 504)
    # Refresh: a failure, then a success.
    key = "SHOPIFY_ACCESS_TOKEN_secret-shop"
    record_ = await web.store.get_record(key)
    await web.store.store_token(key, record_.value, expires_at=utcnow() + timedelta(minutes=1))  # type: ignore[union-attr]
    web.sandbox.faults.add("shopify.access_token", "malformed_json")
    await web.store.get_shopify_token("secret-shop")
    await web.store.set_metadata(key, refresh_retry_at=utcnow() - timedelta(seconds=1))  # the cooldown over
    await web.store.get_shopify_token("secret-shop")
    # Choosing Pages (a wrong choice, then a right one) and disconnecting: the revocations carry tokens too.
    c = browser()
    choice = await click(c, await c.get("/facebook/login"), "allow")
    assert (await choose_pages(c, choice, ["999"])).status_code == 400
    assert (await choose_pages(c, choice, ["101", "102"])).status_code == 200
    await click(c, await c.get("/shopify/gone-shop/login"), "allow")
    token = (await c.get("/", headers={"accept": "application/json"})).json()["csrf_token"]
    web.sandbox.faults.add("shopify.revoke", "drop")
    for path in ("/shopify/gone-shop/disconnect", "/facebook/pages/101/disconnect", "/facebook/pages/102/disconnect"):
        assert (await c.post(path, data={"csrf_token": token})).status_code == 200, path
    await c.post("/facebook/pages/103/disconnect", data={"csrf_token": "forged"})
    assert [r.provider for r in web.sandbox.revocations] == ["facebook"]
    # Forged and replayed callbacks.
    b = browser()
    login = await b.get("/shopify/secret-shop/login", follow_redirects=False)
    state = login.headers["location"].split("state=")[1].split("&")[0]
    await b.get(shopify_callback(callback_params(state, shop="secret-shop.myshopify.com"), secret="forged"))
    await b.get(
        shopify_callback(callback_params(state, shop="secret-shop.myshopify.com"))
    )  # unknown code: 400 upstream
    # Webhooks and Facebook's callbacks.
    body, headers = web.sandbox.shopify_webhook(shop="secret-shop.myshopify.com", topic="app/uninstalled", payload={})
    await b.post("/shopify/webhooks", content=body, headers=headers)
    await b.post("/shopify/webhooks", content=body, headers={**headers, "X-Shopify-Hmac-Sha256": "forged"})
    for path in ("/facebook/deauthorize", "/facebook/data-deletion"):
        signed = web.sandbox.facebook_signed_request({"user_id": "9001"})
        await b.post(path, data={"signed_request": signed})
        await b.post(path, data={"signed_request": signed[:-5]})
    await b.get("/", headers={"accept": "application/json"})
    await b.get("/")


async def test_no_secret_in_logs_output_responses_or_exceptions(
    migrated: Settings, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    raised: list[BaseException] = []
    original = service.app._service_error

    async def recording(request, exc):
        raised.append(exc)
        return await original(request, exc)

    monkeypatch.setattr(service.app, "_service_error", recording)
    caplog.set_level(logging.DEBUG)
    for name in ("salesbot", "uvicorn", "uvicorn.error", "httpx", "httpcore", "sqlalchemy", "sqlalchemy.engine"):
        caplog.set_level(logging.DEBUG, logger=name)
    responses: list[httpx.Response] = []
    async with live_app(migrated.database_url, client_timeout=0.8) as web:
        await run_everything(web, responses)
        secrets = {
            "shopify secret": SHOPIFY_SECRET,
            "facebook secret": FACEBOOK_SECRET,
            "state secret": STATE_SECRET,
            "encryption key": PRIMARY_KEY,
        }
        secrets |= {f"token {value[:6]}": value for value in web.sandbox.tokens}
        # A session id is a bearer secret too; it belongs in Set-Cookie only (checked apart, below).
        session_ids = {value for b in web.browsers if (value := b.cookies.get("salesbot_session")) is not None}
        secrets |= {f"code {value[:4]}": value for value in [*web.sandbox.shopify_codes, *web.sandbox.facebook_codes]}
        async with web.store.engine.connect() as connection:
            stored = (await connection.execute(text("SELECT key, value, refresh_token, type FROM tokens"))).all()
            accounts = set((await connection.execute(text("SELECT uuid FROM accounts"))).scalars())
    assert len([k for k in secrets if k.startswith("token")]) > 20 and len(responses) > 80  # the run really ran
    output = capsys.readouterr()
    haystacks = {
        **{
            f"log {name}": "\n".join(
                f"{r.levelname} {r.getMessage()} {r.exc_text or ''}"
                + ("".join(traceback.format_exception(*r.exc_info)) if r.exc_info else "")
                for r in caplog.records
                if r.name == name
            )
            for name in {r.name for r in caplog.records}
        },
        # As an operator reads them: every record through both of serve's formatters (--log-format).
        "json lines": "\n".join(JsonFormatter().format(r) for r in caplog.records),
        "text lines": "\n".join(TextFormatter().format(r) for r in caplog.records),
        "stdout": output.out,
        "stderr": output.err,
        "responses": "\n".join(
            f"{r.status_code} {r.headers.multi_items()} {r.text}" for r in responses if str(r.url).startswith(APP)
        ),
        "exceptions": "\n".join(f"{e!s} {e!r} " + "".join(traceback.format_exception(e)) for e in raised),
    }
    assert len(raised) > 20 and all(isinstance(e, ServiceError) for e in raised)
    assert "HTTP Request: GET" in haystacks["log httpx"]  # httpx did log its requests, with the query hidden
    # The outcome lines were there to leak from, with their fields.
    for line in ('"event": "shopify.connected"', '"event": "oauth.refused"', '"event": "refresh.failed"'):
        assert line in haystacks["json lines"], line
    assert "refresh.failed shop=secret-shop.myshopify.com reason=provider_error" in haystacks["text lines"]
    leaks = [
        f"{what} in {where}" for where, hay in haystacks.items() for what, value in secrets.items() if value in hay
    ]
    assert sorted(set(leak.split(" in ")[1] for leak in leaks)) == [], leaks[:3]
    assert len(session_ids) > 5
    assert not [
        where for where, hay in haystacks.items() if where != "responses" and any(i in hay for i in session_ids)
    ]
    # The encrypted columns hold Fernet ciphertext, never a plaintext token or account UUID.
    plaintexts = set(web.sandbox.tokens)
    for key, value, refresh, _kind in stored:
        assert value.startswith("gAAAAA") and (refresh is None or refresh.startswith("gAAAAA")), key
        assert value not in plaintexts and not any(p in value for p in plaintexts), key
        assert not any(account in value for account in accounts), key  # a UUID entry is encrypted too


async def test_the_sqlite_file_holds_no_plaintext(tmp_path) -> None:
    settings = make_settings(sqlite_url(tmp_path / "data" / "tokens.db"))
    await migrate.upgrade_async(settings.database_url, KeyRing.from_settings(settings))
    async with live_app(settings.database_url) as web:
        b = web.new_browser()
        assert (await click(b, await b.get("/shopify/plain-shop/login"), "allow")).status_code == 200
        assert (await choose_pages(b, await click(b, await b.get("/facebook/login"), "allow"))).status_code == 200
        # And one login left waiting for its choice: its user token waits encrypted too.
        assert (await click(b, await b.get("/facebook/login"), "allow")).url.path == "/facebook/pages"
        tokens = set(web.sandbox.tokens)
    path = tmp_path / "data" / "tokens.db"
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    raw = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    assert len(tokens) >= 5 and [t for t in tokens if t.encode() in raw] == []
    assert b"plain-shop" in raw  # the file was read: keys are plain, by design (`SELECT key FROM tokens`)


def test_httpx_request_lines_lose_their_query(caplog: pytest.LogCaptureFixture) -> None:
    redact_http_logs()
    caplog.set_level(logging.INFO, logger="httpx")
    url = httpx.URL("https://graph.facebook.com/v25.0/oauth/access_token?client_secret=hush&code=AQsecret")
    logging.getLogger("httpx").info('HTTP Request: %s %s "%s %d %s"', "GET", url, "HTTP/1.1", 200, "OK")
    line = caplog.records[-1].getMessage()
    assert "hush" not in line and "AQsecret" not in line
    assert "https://graph.facebook.com/v25.0/oauth/access_token?[query hidden]" in line
