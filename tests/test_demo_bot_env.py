"""`salesbot demo` writes the settings a bot process needs (demo-bot.env, 0600, beside its database, named
at start), so README's bot snippet runs against it; SIGTERM removes its folder as Ctrl+C does."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from tests.command import ROOT, clean_environ
from tests.demo_server import salesbot_server
from tests.serving import connect_shop

# README's bot snippet ("From the bot"), with the demo's settings file.
BOT = """
import asyncio, sys
from service import Settings, TokenStore

async def main():
    async with TokenStore.open(Settings.load(sys.argv[1])) as store:
        shop = await store.shop_connection("acme-7cu19ngr")
        print(shop.shop, shop.account == sys.argv[2])
        async with store.shopify_client(shop.shop) as client:
            r = await client.post("graphql.json", json={"query": "{ shop { name } }"})
        print(r.json()["data"]["shop"]["name"])

asyncio.run(main())
"""


async def test_a_bot_reads_the_demo_with_the_settings_it_wrote_and_sigterm_removes_them(tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    log = tmp_path / "demo.log"
    with salesbot_server("demo", env={"TMPDIR": str(temporary)}, cwd=tmp_path, log=log, log_level="info") as base:
        printed = re.search(r"with the settings in (\S+demo-bot\.env)", log.read_text())
        assert printed is not None, log.read_text()
        bot_env = Path(printed.group(1))
        assert bot_env.parent.parent == temporary and (bot_env.parent / "demo.db").is_file()
        assert stat.S_IMODE(bot_env.stat().st_mode) == 0o600
        async with httpx.AsyncClient(base_url=base, follow_redirects=True, timeout=30) as browser:
            assert (await connect_shop(browser, "acme-7cu19ngr")).status_code == 200
            account = (await browser.get("/", headers={"accept": "application/json"})).json()["account"]
        bot = subprocess.run(
            [sys.executable, "-c", BOT, str(bot_env), account],
            cwd=tmp_path,  # anywhere: the file names the database by its absolute path
            env=clean_environ(PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bot.returncode == 0, bot.stderr
        assert bot.stdout.splitlines()[0] == "acme-7cu19ngr.myshopify.com True"
        assert bot.stdout.splitlines()[1]  # the store's name, from the stand-in's GraphQL
    assert list(temporary.iterdir()) == []  # stopped by SIGTERM: the folder, database and settings are gone
