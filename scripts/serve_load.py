"""What scripts/soak.py, bench_workers.py and bench_api.py share: `salesbot serve` (N workers, SQLite or
PostgreSQL, a scratch database of the run's own) against the sandbox on loopback, merchants connecting
Shopify stores through it, and a bot process reading the stored connections as a Messenger bot would.

Loopback only; every loop is bounded in count or time and stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from scripts.bench import (  # noqa: E402
    SANDBOX_SERVER,
    SECRET,
    SHOPIFY_KEY,
    SHOPIFY_SECRET,
    consent_form,
    wait_healthy,
    wait_healthy_any,
)
from service.settings import sqlite_url  # noqa: E402
from tests.demo_server import free_port, stop  # noqa: E402


@contextlib.contextmanager
def scratch_database(server_url: str, name: str) -> Iterator[str]:
    """A PostgreSQL database `name` on the server `server_url` names, made for this run and dropped (with
    whatever still holds it) after; its URL as serve takes it (asyncpg)."""
    admin = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


# The bot: warm reads of the stored shops' connections (token, account, Pages), as fast as it can or
# at most --rate a second, for a given time; prints "reads N" at the end.
BOT = """
import asyncio, random, sys, time
from service import Settings, TokenStore

async def main(seconds, rate):
    async with TokenStore.open(Settings.load()) as store:
        reads, shops, ends = 0, [], time.monotonic() + seconds
        next_listing = 0.0
        while time.monotonic() < ends:
            if time.monotonic() >= next_listing:  # shops connected since: take them in too
                shops = [r.subject for r in await store.list_tokens("token") if r.subject]
                next_listing = time.monotonic() + 5
            if not shops:
                await asyncio.sleep(0.05)
                continue
            began = time.monotonic()
            for _ in range(100):
                await store.shop_connection(random.choice(shops))
            reads += 100
            if rate:
                await asyncio.sleep(max(0.0, 100 / rate - (time.monotonic() - began)))
        print("reads", reads, flush=True)

asyncio.run(main(float(sys.argv[1]), float(sys.argv[2])))
"""


SETTING_PREFIXES = ("SHOPIFY_", "FACEBOOK_", "TOKEN_", "DATABASE_", "METRICS_", "LOG_FORMAT")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (serve's workers), in MB."""
    total = 0
    for each in [pid, *_children(pid)]:
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *_children(int(child))]
    return found


@dataclass
class Running:
    port: int
    service: subprocess.Popen
    environ: dict[str, str]
    folder: Path


def salesbot(*args: str, environ: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(Path(sys.executable).parent / "salesbot"), *args], cwd=cwd, env=environ)


@contextlib.contextmanager
def running_service(*, workers: int, database_url: str | None = None, **extra: str) -> Iterator[Running]:
    """serve (and the sandbox it calls) on free loopback ports, its database migrated; stopped after.
    `extra`: more settings for serve (API_RATE_PER_MINUTE, say)."""
    with tempfile.TemporaryDirectory(prefix="salesbot-load-") as tmp:
        folder = Path(tmp)
        sandbox_port, port = free_port(), free_port()
        environ = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("SHOPIFY_", "FACEBOOK_", "TOKEN_", "DATABASE_"))
            },
            "STATE_TOKEN_SECRET": SECRET,
            "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "DATABASE_URL": database_url or sqlite_url(folder / "tokens.db"),
            "SHOPIFY_API_KEY": SHOPIFY_KEY,
            "SHOPIFY_API_SECRET": SHOPIFY_SECRET,
            "SHOPIFY_REDIRECT_URI": f"http://127.0.0.1:{port}/shopify/callback",
            "SHOPIFY_ADMIN_BASE_URL": f"http://127.0.0.1:{sandbox_port}/shopify/{{shop}}",
            **extra,
        }
        code = SANDBOX_SERVER.format(root=str(ROOT), key=SHOPIFY_KEY, secret=SHOPIFY_SECRET, port=sandbox_port)
        sandbox = subprocess.Popen([sys.executable, "-c", code], cwd=tmp)
        service = None
        try:
            wait_healthy_any(sandbox_port, sandbox)
            if salesbot("migrate", environ=environ, cwd=folder).wait() != 0:
                raise RuntimeError("salesbot migrate failed")
            service = salesbot(
                "serve", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
                environ=environ, cwd=folder,
            )  # fmt: skip
            wait_healthy(port, service)
            yield Running(port, service, environ, folder)
        finally:
            for process in (service, sandbox):
                if process is not None:
                    stop(process)


async def connect(port: int, shop: str, browser: httpx.AsyncClient) -> bool:
    """One merchant connecting a store: login, consent on the stand-in, callback, token stored."""
    consent = await browser.get(f"http://127.0.0.1:{port}/shopify/{shop}/login")
    action, fields = consent_form(consent.text, str(consent.url))
    done = await browser.post(action, data=fields)
    browser.cookies.clear()  # the next connection is another merchant's browser
    return done.status_code == 200 and str(done.url).startswith(f"http://127.0.0.1:{port}/")


async def connect_for(port: int, *, seconds: float, clients: int, shops: int, rate: float = 0.0) -> tuple[int, int]:
    """Connections from `clients` browsers for `seconds` (at most `rate` a second overall when given),
    cycling over `shops` store names so the data stays the same size; (made, failed)."""
    made = failed = 0
    ends = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def client() -> None:
        nonlocal made, failed
        async with httpx.AsyncClient(follow_redirects=True, timeout=30.0) as browser:
            while time.monotonic() < ends:
                began = time.monotonic()
                try:
                    ok = await connect(port, f"load-{next(counter) % shops}", browser)
                except httpx.HTTPError:
                    ok = False
                made, failed = (made + 1, failed) if ok else (made, failed + 1)
                if rate:
                    await asyncio.sleep(max(0.0, clients / rate - (time.monotonic() - began)))

    await asyncio.gather(*(client() for _ in range(clients)))
    return made, failed


def start_bot(running: Running, *, seconds: float, rate: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", BOT, str(seconds), str(rate)],
        cwd=running.folder,
        env={**running.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )


def bot_reads(bot: subprocess.Popen) -> int:
    out, _ = bot.communicate(timeout=120)
    return int(out.split()[-1]) if out.startswith("reads") else 0
