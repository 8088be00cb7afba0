"""A real `salesbot serve` (any options: --workers, --log-format ...) on loopback, against the sandbox
served over loopback HTTP from this process, and browsers that connect through it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from salesbot_sandbox import Sandbox
from tests.command import salesbot
from tests.conftest import PRIMARY_KEY, STATE_SECRET
from tests.demo_server import free_port, salesbot_server
from tests.reliability.live import live_environ, sandbox_for, serve_in_thread
from tests.web import form_of


@dataclass
class Served:
    base_url: str
    sandbox: Sandbox
    environ: dict[str, str]
    log: Path

    def lines(self) -> list[dict]:
        """What serve logged so far, one JSON object a line (serve runs with --log-format json)."""
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def browser(self, *, keep_alive: bool = True) -> httpx.AsyncClient:
        """A browser with its own cookie jar; without keep_alive each request is a new connection, which
        any worker may accept."""
        limits = httpx.Limits() if keep_alive else httpx.Limits(max_keepalive_connections=0)
        return httpx.AsyncClient(base_url=self.base_url, follow_redirects=True, timeout=30, limits=limits)


def serve_environ(database_url: str, sandbox_url: str, port: int, **extra: str) -> dict[str, str]:
    return {
        "STATE_TOKEN_SECRET": STATE_SECRET,
        "TOKEN_ENCRYPTION_KEYS": PRIMARY_KEY,
        "DATABASE_URL": database_url,
        **live_environ(sandbox_url, app_url=f"http://127.0.0.1:{port}"),
        **extra,
    }


@contextmanager
def sandbox_over_http() -> Iterator[tuple[Sandbox, str]]:
    sandbox = sandbox_for()
    with serve_in_thread(sandbox.app) as url:
        yield sandbox, url


@contextmanager
def serving(
    database_url: str,
    folder: Path,
    *options: str,
    sandbox: tuple[Sandbox, str],
    migrate: bool = True,
    name: str = "serve",
    log_format: str | None = "json",
    **extra: str,
) -> Iterator[Served]:
    """`salesbot serve --log-format json --log-level info *options` on a free port, its database migrated
    (log_format None: no --log-format, so LOG_FORMAT or text)."""
    port = free_port()
    environ = serve_environ(database_url, sandbox[1], port, **extra)
    if migrate:
        result = salesbot("migrate", cwd=folder, environ=environ)
        assert result.returncode == 0, result.stderr
    log = folder / f"{name}.log"
    formatting = ("--log-format", log_format) if log_format else ()
    with salesbot_server(
        "serve", *formatting, *options, env=environ, cwd=folder, port=port, log=log, log_level="info"
    ) as base_url:
        yield Served(base_url, sandbox[0], environ, log)


async def connect_shop(browser: httpx.AsyncClient, shop: str) -> httpx.Response:
    """Login on serve, Allow on the stand-in's consent page (over loopback HTTP), back on serve."""
    consent = await browser.get(f"/shopify/{shop}/login")
    assert consent.status_code == 200, consent.text
    action, fields = form_of(consent, "allow")
    return await browser.post(action, data=fields)


def wait_for(process: subprocess.Popen, timeout: float) -> int:
    return process.wait(timeout=timeout)
