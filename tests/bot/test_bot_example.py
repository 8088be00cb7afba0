"""service/bot_example.py: Meta's webhook check, signatures refused, and the bot end to end in the demo,
where a shopper's message is answered with products fetched by a token that had to be refreshed first."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from salesbot_sandbox import Sandbox
from service.bot_example import create_bot
from service.demo import DEMO_SHOPPER, create_demo_app
from service.models import utcnow
from service.settings import Settings
from service.vault import TokenStore
from tests.bot.helpers import SHOP, SHOP_KEY, bot_store, connect_merchant
from tests.conftest import base_environ
from tests.demo_server import free_port, stop
from tests.web import FACEBOOK_SECRET, Web, choose_pages, click, csrf_of, running_app

VERIFY = "a-verify-token-of-ours"


def signed(body: bytes, secret: str = FACEBOOK_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"}


@contextmanager
def bot_client(web: Web, store: TokenStore) -> Iterator[httpx.AsyncClient]:
    bot = create_bot(web.settings, verify_token=VERIFY, store=store)
    yield httpx.AsyncClient(transport=httpx.ASGITransport(app=bot), base_url="http://bot")


async def test_the_webhook_check_echoes_the_challenge_only_for_our_verify_token(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web, bot_store(web) as store:
        with bot_client(web, store) as bot:
            ok = await bot.get(
                "/webhook", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"}
            )
            assert (ok.status_code, ok.text) == (200, "1158201444")
            for params in (
                {"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"},
                {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "1"},
                {"hub.challenge": "1"},
            ):
                refused = await bot.get("/webhook", params=params)
                assert refused.status_code == 403 and "1" not in refused.text


async def test_a_message_without_a_valid_signature_is_refused_and_not_answered(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        body, headers = web.sandbox.messenger_webhook(page_id="101", psid="7001", text="Hi")
        async with bot_store(web) as store:
            with bot_client(web, store) as bot:
                for bad in (
                    {"Content-Type": "application/json"},  # unsigned
                    signed(body, secret="another-apps-secret"),
                    {**headers, "X-Hub-Signature-256": headers["X-Hub-Signature-256"].replace("sha256=", "sha1=")},
                ):
                    assert (await bot.post("/webhook", content=body, headers=bad)).status_code == 403
                # The signature covers the raw body: the same event re-serialised no longer matches.
                reserialised = json.dumps(json.loads(body), indent=1).encode()
                assert (await bot.post("/webhook", content=reserialised, headers=headers)).status_code == 403
                assert web.sandbox.sent_messages() == []
                assert (await bot.post("/webhook", content=body, headers=headers)).text == "EVENT_RECEIVED"
        [reply] = web.sandbox.sent_messages()
        assert (reply.page_id, reply.psid) == ("101", "7001")
        assert reply.text.startswith(f"Thanks for your message! A few things from {SHOP}: Trail Runner (89.00 USD)")


async def test_a_page_without_a_store_gets_a_polite_answer(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        await web.store.delete_token(SHOP_KEY)
        body, headers = web.sandbox.messenger_webhook(page_id="102", psid="7002", text="Hello?")
        async with bot_store(web) as store:
            with bot_client(web, store) as bot:
                assert (await bot.post("/webhook", content=body, headers=headers)).status_code == 200
        [reply] = web.sandbox.sent_messages("102")
        assert "not open on Messenger yet" in reply.text
        assert not any(r.path.endswith("/graphql.json") for r in web.sandbox.requests)


# --- in the demo ---------------------------------------------------------------------------------


@contextmanager
def demo_server(data_dir: Path) -> Iterator[tuple[str, object, Settings]]:
    """`salesbot demo`'s app under a real uvicorn on loopback, lifespan and all, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app, settings = create_demo_app("127.0.0.1", port, data_dir)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the demo did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app, settings
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_the_example_bot_end_to_end_in_the_demo(tmp_path: Path) -> None:
    # Synchronous: building the demo migrates its database with asyncio.run, as `salesbot demo` does.
    with demo_server(tmp_path) as (base_url, app, settings):
        sandbox: Sandbox = app.state.services.demo  # type: ignore[attr-defined]
        old, conversation = asyncio.run(shopper_writes(base_url, settings, sandbox))
    assert conversation.url.path == "/sandbox/messenger"
    [reply] = sandbox.sent_messages("101")
    assert reply.psid == DEMO_SHOPPER and "Trail Runner (89.00 USD)" in reply.text
    assert "Any shoes?" in conversation.text and "Trail Runner" in conversation.text
    # The products were asked for once, with the refreshed token: refreshed first, not healed by a 401.
    [query] = [r for r in sandbox.requests if r.path.endswith("/graphql.json")]
    used = dict(query.headers)["x-shopify-access-token"]
    assert used != old and used in sandbox.valid_shopify_tokens(SHOP)
    assert sum(("grant_type", "refresh_token") in r.form for r in sandbox.requests) == 1


async def shopper_writes(base_url: str, settings: Settings, sandbox: Sandbox) -> tuple[str | None, httpx.Response]:
    """A merchant connects both sides; the shop's token goes stale; a shopper writes through the demo's button."""
    async with httpx.AsyncClient(base_url=base_url, follow_redirects=True, timeout=10) as browser:
        await click(browser, await browser.get("/shopify/acme-7cu19ngr/login"), "allow")
        choice = await click(browser, await browser.get("/facebook/login"), "allow")
        status = await choose_pages(browser, choice)  # every Page the form offers, as it comes
        assert 'id="demo-message"' in status.text

        # The shop's token is an hour old: due for the vault, already refused by Shopify.
        async with TokenStore.open(settings) as store:
            old = await store.get_token(SHOP_KEY)
            await store.set_metadata(SHOP_KEY, expires_at=utcnow() + timedelta(minutes=1))
        sandbox.expire_shopify_access(SHOP)

        # The demo page's button: the sandbox sends the signed webhook to the bot at /bot.
        form = {"csrf_token": await csrf_of(browser), "page_id": "101", "text": "Any shoes?"}
        return old, await browser.post("/demo/message", data=form)


# --- safe to copy --------------------------------------------------------------------------------


async def test_a_redelivered_message_is_answered_once(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        body, headers = web.sandbox.messenger_webhook(page_id="101", psid="7001", text="Hi")
        async with bot_store(web) as store:
            with bot_client(web, store) as bot:
                for _ in range(3):  # Meta sends again when our 200 was slow or lost
                    assert (await bot.post("/webhook", content=body, headers=headers)).status_code == 200
                assert len(web.sandbox.sent_messages()) == 1
                other, headers = web.sandbox.messenger_webhook(page_id="101", psid="7001", text="Hi")  # a new mid
                assert (await bot.post("/webhook", content=other, headers=headers)).status_code == 200
        assert len(web.sandbox.sent_messages()) == 2


def test_the_seen_ids_are_bounded_in_time_and_number() -> None:
    from service.bot_example import Seen

    seen = Seen(window=600, limit=3)
    assert seen.first_time("a", now=0) and not seen.first_time("a", now=599)
    assert seen.first_time("a", now=601)  # forgotten after the window
    for n, name in enumerate("bcd"):
        assert seen.first_time(name, now=602 + n)
    assert seen.first_time("a", now=606)  # the oldest went when the fourth came


async def test_a_signed_but_malformed_event_is_answered_200_and_logged(
    migrated: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"sender": {"id": "7001"}, "recipient": {"id": "101"}, "message": {"mid": "m_1", "text": "Hi"}}
    malformed = [
        b"not json",
        b"[1, 2]",
        json.dumps({"object": "user", "entry": []}).encode(),
        json.dumps({"object": "page", "entry": 7}).encode(),
        json.dumps(
            {"object": "page", "entry": [{"messaging": [{"sender": "7001", "message": {"text": "x"}}]}]}
        ).encode(),
        # One readable message beside unreadable items: it is answered, the rest logged.
        json.dumps(
            {"object": "page", "entry": [{"messaging": [{"message": {"mid": 5, "text": ["x"]}}, good]}, "junk"]}
        ).encode(),
    ]
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        async with bot_store(web) as store:
            with bot_client(web, store) as bot:
                for body in malformed:
                    response = await bot.post("/webhook", content=body, headers=signed(body))
                    assert response.status_code == 200, body
        [reply] = web.sandbox.sent_messages()
        assert reply.psid == "7001"
    warnings = [r.getMessage() for r in caplog.records if r.name == "salesbot.bot_example" and r.levelname == "WARNING"]
    assert len(warnings) == len(malformed) and all("ignored" in warning for warning in warnings)


def test_the_bot_runs_without_an_access_log_that_prints_the_verify_token(migrated: Settings, tmp_path: Path) -> None:
    port = free_port()
    secret_token = "verify-token-that-must-not-be-logged"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STATE_TOKEN", "TOKEN_", "DATABASE", "FACEBOOK_"))},
        **base_environ(DATABASE_URL=migrated.database_url, FACEBOOK_APP_SECRET=FACEBOOK_SECRET),
        "MESSENGER_VERIFY_TOKEN": secret_token,
    }
    with open(tmp_path / "bot.log", "w+b") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.bot_example", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=output,
            stderr=output,
        )
        try:
            url = f"http://127.0.0.1:{port}/webhook"
            params = {"hub.mode": "subscribe", "hub.verify_token": secret_token, "hub.challenge": "4711"}
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None and time.monotonic() < deadline, "the bot did not start"
                try:
                    answer = httpx.get(url, params=params, timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            assert (answer.status_code, answer.text) == (200, "4711")
            body = b"signed, but not JSON"
            assert httpx.post(url, content=body, headers=signed(body), timeout=5).status_code == 200
        finally:
            stop(process)
        output.seek(0)
        printed = output.read().decode(errors="replace")
    assert "not a Page event" in printed  # it does log: what it logs carries no verify token
    assert secret_token not in printed and "hub.verify_token" not in printed
