"""PostgreSQL going away: a dropped pooled connection is replaced unseen; while the database refuses,
routes and /healthz answer 503 `database_unavailable`; afterwards the same process serves again.

A real `salesbot serve` against a database of this test's own on the TEST_DATABASE_URL server: only
that database's backends are terminated and only it stops accepting connections, so suites running
beside this one on the same server are never touched.
"""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from service.errors import DatabaseUnavailable
from tests.command import ROOT, clean_environ, salesbot
from tests.conftest import PRIMARY_KEY, STATE_SECRET, TEST_DATABASE_URL
from tests.demo_server import free_port, salesbot_server
from tests.web import SHOPIFY_KEY, SHOPIFY_SECRET

pytestmark = pytest.mark.postgres
SHOP = "acme-7cu19ngr"


async def _admin(statement: str, *args: object) -> object:
    assert TEST_DATABASE_URL is not None
    connection = await asyncpg.connect(TEST_DATABASE_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return await connection.fetchval(statement, *args)
    finally:
        await connection.close()


def terminate_backends(database: str) -> int:
    """pg_terminate_backend for every connection to `database` (ours alone), as a restart would."""
    statement = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
    )
    return asyncio.run(_admin(statement, database))  # type: ignore[return-value]


def allow_connections(database: str, allowed: bool) -> None:
    asyncio.run(_admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if allowed else "false"}'))


def states_stored(url: str) -> int:
    async def count() -> int:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return await connection.fetchval("SELECT count(*) FROM oauth_states")
        finally:
            await connection.close()

    return asyncio.run(count())


def test_a_dropped_connection_is_replaced_and_an_unreachable_database_is_503(
    scratch_postgres: str, tmp_path: Path
) -> None:
    database = str(make_url(scratch_postgres).database)
    port = free_port()
    environ = {
        "STATE_TOKEN_SECRET": STATE_SECRET,
        "DATABASE_URL": scratch_postgres,
        "SHOPIFY_API_KEY": SHOPIFY_KEY,
        "SHOPIFY_API_SECRET": SHOPIFY_SECRET,
        "SHOPIFY_REDIRECT_URI": f"http://127.0.0.1:{port}/shopify/callback",
    }
    assert salesbot("migrate", cwd=tmp_path, environ=environ).returncode == 0
    log = tmp_path / "serve.log"
    flows_started = 0
    with salesbot_server("serve", env=environ, cwd=tmp_path, port=port, log=log) as base:
        client = httpx.Client(base_url=base, timeout=10, headers={"accept": "application/json"})

        def login() -> httpx.Response:
            return client.get(f"/shopify/{SHOP}/login")  # writes the OAuth state, then redirects to Shopify

        try:
            for _ in range(4):  # a few pooled connections
                assert client.get("/healthz").status_code == 200
                assert login().status_code == 302
                flows_started += 1

            assert terminate_backends(database) >= 1
            assert client.get("/healthz").status_code == 200  # the first request after the drop
            assert login().status_code == 302
            flows_started += 1

            allow_connections(database, False)
            terminate_backends(database)
            for response in (client.get("/healthz"), login(), login()):
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "database_unavailable"

            allow_connections(database, True)
            assert client.get("/healthz").json() == {"status": "ok"}  # no restart
            assert login().status_code == 302
            flows_started += 1
        finally:
            allow_connections(database, True)
            client.close()
    assert states_stored(scratch_postgres) == flows_started  # the refused attempts left nothing behind
    printed = log.read_text()
    assert "Traceback" not in printed and "unhandled" not in printed and " 500 " not in printed
    assert "database unavailable on GET /healthz" in printed


BOT_LOOP = """
import asyncio, sys
from service import TokenStore
from service.errors import ServiceError

async def main():
    async with TokenStore.open(sys.argv[1]) as store:
        ok, codes, waits, n = 0, {}, set(), 0
        while sys.stdin.readline():  # one line from the test: one more round
            for _ in range(20):
                n += 1
                try:
                    await store.store_token("SHOPIFY_ACCESS_TOKEN_loop", f"shpat_{n}")
                    assert await store.get_token("SHOPIFY_ACCESS_TOKEN_loop") == f"shpat_{n}"
                    await store.shop_connection("loop")
                    ok += 1
                except ServiceError as error:  # what a bot catches; anything else ends this process
                    codes[error.code] = codes.get(error.code, 0) + 1
                    waits.add(getattr(error, "retry_after", None))
            print(ok, sorted(codes.items()), sorted(waits), flush=True)

asyncio.run(main())
"""


class BotLoop:
    """A bot process reading and writing in rounds, catching ServiceError and nothing else."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        environ = {"STATE_TOKEN_SECRET": STATE_SECRET, "TOKEN_ENCRYPTION_KEYS": PRIMARY_KEY}
        self.process = subprocess.Popen(
            [sys.executable, "-c", BOT_LOOP, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=clean_environ(**environ, PYTHONPATH=str(ROOT)),
        )

    def round(self) -> tuple[int, dict[str, int], list[float | None]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the bot died: {self.process.stderr.read() if self.process.stderr else ''}"
        ok, codes, waits = ast.literal_eval(f"({line.strip().replace('] [', '], [').replace(' [', ', [', 1)})")
        return ok, dict(codes), waits

    def stop(self) -> str:
        assert self.process.stdin is not None
        assert self.process.stdout is not None and self.process.stderr is not None
        self.process.stdin.close()  # no more rounds: the loop ends, the store closes
        self.process.wait(timeout=30)
        errors = self.process.stderr.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return errors


def test_a_bot_loop_catching_service_error_survives_a_database_outage(scratch_postgres: str, tmp_path: Path) -> None:
    database = str(make_url(scratch_postgres).database)
    environ = {"STATE_TOKEN_SECRET": STATE_SECRET, "DATABASE_URL": scratch_postgres}
    assert salesbot("migrate", cwd=tmp_path, environ=environ).returncode == 0
    bot = BotLoop(scratch_postgres, tmp_path)
    try:
        ok, codes, _ = bot.round()
        assert ok == 20 and codes == {}
        assert terminate_backends(database) >= 2  # its reader and writer, as a restart would
        allow_connections(database, False)  # ... and the server refusing for a while
        terminate_backends(database)
        down = bot.round()
        assert down[0] == ok and down[1] == {"database_unavailable": 20}, down
        assert down[2] == [DatabaseUnavailable.SUGGESTED_WAIT]  # every one came with a suggested wait
        allow_connections(database, True)
        back, codes, _ = bot.round()
        assert back == ok + 20 and codes == {"database_unavailable": 20}  # the same process, no restart
    finally:
        allow_connections(database, True)
        errors = bot.stop()
    assert bot.process.returncode == 0 and "Traceback" not in errors, errors
