"""The sweep (service/sweep.py): what it refreshes, what it asks Facebook about and how often, and that
one process at a time runs it, whether in serve's lifespan or from cron (`salesbot sweep`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import timedelta

from sqlalchemy import bindparam, text

from service.models import UTCDateTime, utcnow
from service.settings import Settings
from service.sweep import Sweep
from tests.bot.helpers import SHOP, SHOP_KEY, bot_store, connect_merchant, refresh_calls
from tests.command import ROOT, clean_environ
from tests.conftest import base_environ
from tests.reliability.live import LiveWeb, live_app, live_environ
from tests.web import Web, choose_pages, click, running_app

PAGE_KEYS = [f"FACEBOOK_ACCESS_TOKEN_{page_id}" for page_id in ("101", "102", "103")]


def debug_token_calls(web: Web | LiveWeb) -> int:
    return sum(request.path.endswith("/debug_token") for request in web.sandbox.requests)


async def checked(web: Web | LiveWeb) -> dict[str, bool]:
    return {key: (await web.store.get_record(key)).checked_at is not None for key in PAGE_KEYS}  # type: ignore[union-attr]


async def test_a_shop_in_use_is_refreshed_before_a_bot_asks_and_a_quiet_one_is_not(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        sweep = Sweep(web.store, web.browser, page_checks=0)
        # Eight minutes left: a bot would refresh it at five; the sweep does at ten, but only if a bot uses it.
        await web.store.set_metadata(SHOP_KEY, expires_at=utcnow() + timedelta(minutes=8))
        report = await sweep.round()
        assert (report.refreshed, refresh_calls(web)) == (0, 0)  # nobody asked for it: it may lapse
        async with bot_store(web) as store:
            before = await store.get_shopify_token(SHOP)  # a bot asks (noted as in use)
        assert refresh_calls(web) == 0
        report = await sweep.round()
        assert (report.refreshed, refresh_calls(web)) == (1, 1)
        async with bot_store(web) as store:
            after = await store.get_shopify_token(SHOP)
        assert after != before and after in web.sandbox.valid_shopify_tokens(SHOP) and refresh_calls(web) == 1
        # Not due any more: the next round leaves it alone.
        assert (await sweep.round()).refreshed == 0 and refresh_calls(web) == 1


async def test_pages_are_checked_a_bounded_number_at_a_time_and_not_again_within_hours(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        sweep = Sweep(web.store, web.browser, page_checks=2)
        assert (await sweep.round()).pages_checked == 2
        assert sorted((await checked(web)).values()) == [False, True, True]
        assert (await sweep.round()).pages_checked == 1  # the one never checked
        assert (await sweep.round()).pages_checked == 0  # all checked within the last hours
        assert debug_token_calls(web) == 3
        # A Page checked longest ago (a day) comes round again, before those checked since.
        async with web.store.engine.begin() as connection:  # as a day going by would leave it
            moved = text("UPDATE tokens SET checked_at = :when WHERE key = :key").bindparams(
                bindparam("when", type_=UTCDateTime())
            )
            await connection.execute(moved, {"when": utcnow() - timedelta(hours=25), "key": PAGE_KEYS[1]})
        assert (await sweep.round()).pages_checked == 1 and debug_token_calls(web) == 4
        record = await web.store.get_record(PAGE_KEYS[1])
        assert (
            record is not None and record.checked_at is not None and record.checked_at > utcnow() - timedelta(minutes=1)
        )


async def test_serve_runs_the_sweep_by_itself(migrated: Settings) -> None:
    async with running_app(migrated.database_url, sweep_every=0.05) as web:
        await connect_merchant(web)
        web.sandbox.invalidate_page_token("103", subcode=467)
        deadline = time.monotonic() + 20
        while (page := await web.store.page_connection("103")) is None or page.health == "ok":
            assert time.monotonic() < deadline, "the sweep never checked Page 103"
            await asyncio.sleep(0.02)
        assert (page.health, page.reason) == ("needs_reconnect", "session_invalid")


def sweep_command(web: LiveWeb) -> subprocess.Popen[str]:
    environ = clean_environ(**base_environ(DATABASE_URL=web.settings.database_url), **live_environ(web.sandbox_url))
    return subprocess.Popen(
        [sys.executable, "-m", "service", "sweep"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_three_processes_sweep_at_once_and_the_work_is_done_once(migrated: Settings) -> None:
    async with live_app(migrated.database_url) as web:
        browser = web.new_browser()
        consent = await browser.get(f"/shopify/{SHOP}/login")
        await click(browser, consent, "allow")
        consent = await browser.get("/facebook/login")
        await choose_pages(browser, await click(browser, consent, "allow"))
        # The shop is in use and due within the sweep's lead; no Page has been checked.
        async with bot_store(web) as store:  # type: ignore[arg-type]
            await store.get_shopify_token(SHOP)
        await web.store.set_metadata(SHOP_KEY, expires_at=utcnow() + timedelta(minutes=8))
        # Three cron runs start together: one sweeps while the others wait for it, then find nothing due.
        processes = [sweep_command(web) for _ in range(3)]
        results = [await asyncio.to_thread(process.communicate, timeout=120) for process in processes]
        assert [process.returncode for process in processes] == [0, 0, 0], [err[-1500:] for _, err in results]
        lines = sorted(err.strip().splitlines()[-1] for _, err in results)
        assert lines == [
            "refreshed 0 shops (0 failed, 0 refused); checked 0 Pages (0 changed)",
            "refreshed 0 shops (0 failed, 0 refused); checked 0 Pages (0 changed)",
            "refreshed 1 shops (0 failed, 0 refused); checked 3 Pages (0 changed)",
        ]
        assert refresh_calls(web) == 1 and debug_token_calls(web) == 3  # type: ignore[arg-type]
        assert all((await checked(web)).values())
