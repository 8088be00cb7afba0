"""A plain process (not the app) opens the store from settings alone and calls every method of the bot's
side, against the sandbox over real HTTP, on SQLite and on PostgreSQL. Its Shopify token is due: the
process refreshes it with the client it built for itself."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

from service.models import utcnow
from service.settings import Settings
from tests.bot.helpers import PAGES, SHOP, SHOP_KEY, refresh_calls
from tests.command import ROOT
from tests.conftest import base_environ
from tests.reliability.live import live_app, live_environ
from tests.web import choose_pages, click


def digest(token: str | None) -> str | None:
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()


async def test_a_plain_process_calls_each_method(migrated: Settings, tmp_path: Path) -> None:
    async with live_app(migrated.database_url, client_timeout=5.0) as web:
        browser = web.new_browser()
        await click(browser, await browser.get("/shopify/acme-7cu19ngr/login"), "allow")
        choice = await click(browser, await browser.get("/facebook/login"), "allow")
        await choose_pages(browser, choice)  # every Page the form offers, as it comes
        account = (await browser.get("/", headers={"accept": "application/json"})).json()["account"]
        old = await web.store.get_token(SHOP_KEY)
        await web.store.set_metadata(SHOP_KEY, expires_at=utcnow() + timedelta(minutes=1))
        web.sandbox.expire_shopify_access(SHOP)  # only a refreshed token will do

        environ = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            **base_environ(DATABASE_URL=migrated.database_url, HTTP_TIMEOUT_SECONDS="5"),
            **live_environ(web.sandbox_url),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bot.plain_process",
            "acme-7cu19ngr",
            "101",
            "7001",
            cwd=tmp_path,  # no .env here: the environment alone
            env=environ,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()[-2000:]
        got = json.loads(out)

        new = await web.store.get_token(SHOP_KEY)
        assert new != old and new in web.sandbox.valid_shopify_tokens(SHOP)
        assert refresh_calls(web) == 1
        page_token = await web.store.get_token("FACEBOOK_ACCESS_TOKEN_101")
        assert got["page"] == {"shop": SHOP, "account": account, "token": digest(page_token)}
        assert got["shop"] == {"shop": SHOP, "account": account, "pages": list(PAGES)}
        assert got["shop_token"] == got["get_shopify_token"] == digest(new)
        assert got["products"] == ["Trail Runner", "Canvas Sneaker"]
        assert got["sent"] == 200
        [sent] = web.sandbox.sent_messages("101")
        assert (sent.psid, sent.text) == ("7001", "Hello from a plain process")
        assert old not in out.decode() and new not in out.decode() and err == b""
