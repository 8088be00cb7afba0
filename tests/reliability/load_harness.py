"""Many merchants at once against two `salesbot serve` processes on one SQLite file, with faults.

The sandbox runs under uvicorn in a thread of this process; two service processes (A and B) share one
SQLite file and one STATE_TOKEN_SECRET. A's Shopify redirect URI is B's callback and B's is A's, so
every flow starts on one process and finishes on the other (state in the database, session cookie
signed by either). Each merchant is its own browser (cookie jar) and its own shop. Faults are queued
on the token endpoint; each takes exactly one token exchange, so exactly that many first attempts
fail, with a clear error code; a merchant that failed tries again.

Only Shopify: the sandbox's Facebook user and its three Pages are shared by every merchant, and a
Page already linked keeps its account by design, so Facebook flows would merge accounts on purpose.

Used by tests/reliability/test_load.py and scripts/fault_load.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from service import migrate
from service.crypto import KeyRing
from service.settings import Settings, sqlite_url
from tests.demo_server import free_port, stop, wait_healthy
from tests.reliability.live import live_environ, sandbox_for, serve_in_thread
from tests.web import SHOPIFY_SECRET, form_of

ROOT = Path(__file__).resolve().parents[2]
FAULT_KINDS = ("status_500", "malformed_json", "missing_fields", "drop", "slow")
EXPECTED = {"status_500": 502, "malformed_json": 502, "missing_fields": 502, "drop": 504, "slow": 504}
SERVE = (sys.executable, "-m", "service")
BAD_LOG_WORDS = ("database is locked", "OperationalError", "unhandled", "Traceback")


@contextmanager
def serve_process(port: int, environ: dict[str, str], cwd: Path, log: Path) -> Iterator[str]:
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [*SERVE, "serve", "--port", str(port), "--log-level", "debug"],
            env={**os.environ, **environ, "PYTHONPATH": str(ROOT)},
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(base, process)
            yield base
        finally:
            stop(process)


@dataclass
class LoadResult:
    merchants: int = 0
    connected: int = 0
    failures: Counter = field(default_factory=Counter)  # (status, code) of refused attempts
    unexpected: list[str] = field(default_factory=list)  # any answer that is neither success nor a clear error
    cross_linked: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)  # secrets, tokens or codes found in the servers' output
    accounts: int = 0
    leftover_states: int = 0
    faults_left: int = 0
    seconds: float = 0.0
    logs: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.connected == self.merchants
            and not self.unexpected
            and not self.cross_linked
            and not self.lost
            and not self.log_problems
            and not self.leaked
            and self.accounts == self.merchants
            and self.leftover_states == 0
            and self.faults_left == 0
        )

    def summary(self) -> str:
        refused = sum(self.failures.values())
        return (
            f"merchants {self.merchants}, connected {self.connected}, refused attempts {refused}, "
            f"unexpected {len(self.unexpected)}, lost {len(self.lost)}, cross-linked {len(self.cross_linked)}, "
            f"locked/500 log lines {len(self.log_problems)}, leaked {len(self.leaked)}, {self.seconds:.1f} s"
        )


async def _merchant(base: str, shop: str, result: LoadResult, gate: asyncio.Semaphore) -> str | None:
    """Connect one shop, trying again after a refused attempt; return the account its session ends in."""
    async with gate, httpx.AsyncClient(follow_redirects=True, timeout=30) as browser:
        for _attempt in range(4):
            consent = await browser.get(f"{base}/shopify/{shop}/login")
            if consent.status_code != 200 or "/admin/oauth/authorize" not in str(consent.url):
                result.unexpected.append(f"{shop}: login answered {consent.status_code}")
                return None
            action, fields = form_of(consent, "allow")
            done = await browser.post(action, data=fields)
            if done.status_code == 200 and done.url.path == "/":
                status = await browser.get(str(done.url), headers={"accept": "application/json"})
                view = status.json()
                if [s["shop"] for s in view["shops"]] != [f"{shop}.myshopify.com"]:
                    result.cross_linked.append(f"{shop}: its session shows {view['shops']}")
                return view["account"]
            code = None
            if done.headers.get("content-type", "").startswith("text/html") and 'data-code="' in done.text:
                code = done.text.split('data-code="', 1)[1].split('"', 1)[0]
            if done.status_code in (502, 504) and code in ("provider_error", "provider_unavailable"):
                result.failures[(done.status_code, code)] += 1
                continue
            result.unexpected.append(f"{shop}: callback answered {done.status_code} {code}")
            return None
    result.unexpected.append(f"{shop}: still refused after 4 attempts")
    return None


async def run_load(
    *, merchants: int, faults: int, concurrency: int, client_timeout: float = 1.0, slow: float = 1.5
) -> LoadResult:
    result = LoadResult(merchants=merchants)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with tempfile.TemporaryDirectory(prefix="salesbot-load-") as scratch, ExitStack() as stack:
        tmp = Path(scratch)
        db = tmp / "data" / "tokens.db"
        secret_env = {
            "STATE_TOKEN_SECRET": "load-test-state-secret-0123456789abcdef",
            "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "DATABASE_URL": sqlite_url(db),
            "HTTP_TIMEOUT_SECONDS": str(client_timeout),
        }
        settings = Settings.from_environ(secret_env, env_file=None)
        await migrate.upgrade_async(settings.database_url, KeyRing.from_settings(settings))
        sandbox = sandbox_for()
        sandbox_url = stack.enter_context(serve_in_thread(sandbox.app, graceful=slow + 1))
        ports = [free_port(), free_port()]
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        logs = [tmp / "a.log", tmp / "b.log"]
        for n, port in enumerate(ports):
            other = bases[1 - n]
            environ = {**secret_env, **live_environ(sandbox_url, app_url=other)}
            server = serve_process(port, environ, tmp, logs[n])
            await asyncio.to_thread(stack.enter_context, server)
        for n in range(faults):
            sandbox.faults.add("shopify.access_token", FAULT_KINDS[n % len(FAULT_KINDS)], seconds=slow)
        gate = asyncio.Semaphore(concurrency)
        shops = [f"m{n:04d}-shop" for n in range(merchants)]
        accounts = await asyncio.gather(*(_merchant(bases[n % 2], shop, result, gate) for n, shop in enumerate(shops)))
        result.faults_left = len(sandbox.faults.pending)
        result.connected = sum(account is not None for account in accounts)
        # What is on disk, read directly: each shop's token and link on the account its own flow ended in.
        ring = KeyRing.from_settings(settings)
        connection = sqlite3.connect(db)
        try:
            rows = {
                key: (ring.decrypt(value, key_name=key), account)
                for key, value, account in connection.execute("SELECT key, value, account_uuid FROM tokens")
            }
            result.accounts = connection.execute("SELECT COUNT(*) FROM accounts").fetchone()[0]
            result.leftover_states = connection.execute("SELECT COUNT(*) FROM oauth_states").fetchone()[0]
        finally:
            connection.close()
        for shop, account in zip(shops, accounts, strict=True):
            if account is None:
                continue
            token = rows.get(f"SHOPIFY_ACCESS_TOKEN_{shop}")
            link = rows.get(f"USER_UUID_{shop}")
            if token is None or link is None:
                result.lost.append(shop)
                continue
            if not (token[1] == link[1] == link[0] == account):
                result.cross_linked.append(f"{shop}: rows on {token[1]}/{link[1]}, session on {account}")
            if token[0] not in sandbox.valid_shopify_tokens(f"{shop}.myshopify.com"):
                result.cross_linked.append(f"{shop}: its stored token is not one Shopify issued to it")
        if len({a for a in accounts if a is not None}) != result.connected:
            result.cross_linked.append("two merchants share an account")
        if set(rows) != {f"{p}_{s}" for s in shops for p in ("SHOPIFY_ACCESS_TOKEN", "USER_UUID")}:
            result.lost.append("the token table holds rows no merchant's flow wrote, or misses some")
        stack.close()  # stop the servers so their logs are complete
        result.logs = "\n".join(log.read_text(errors="replace") for log in logs)
        result.log_problems = [line for line in result.logs.splitlines() if any(word in line for word in BAD_LOG_WORDS)]
        # Our access log ("salesbot: GET /path 500 3ms"): no request of a merchant may end in a 500.
        # Both servers ran at --log-level debug (httpx, httpcore, sqlalchemy, uvicorn all talking): no secret.
        secrets = [secret_env["STATE_TOKEN_SECRET"], secret_env["TOKEN_ENCRYPTION_KEYS"], SHOPIFY_SECRET]
        secrets += [*sandbox.tokens, *sandbox.shopify_codes]
        result.leaked = [value[:6] + "..." for value in secrets if value in result.logs]
        failed = re.compile(r"salesbot: \S+ \S+ 5\d\d(?<!50[24]) ")
        result.log_problems += [line for line in result.logs.splitlines() if failed.search(line)]
    result.seconds = loop.time() - began
    return result
