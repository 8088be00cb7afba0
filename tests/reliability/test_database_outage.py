"""PostgreSQL going away: a dropped pooled connection is replaced unseen; while the database refuses,
routes and /healthz answer 503 `database_unavailable`; afterwards the same process serves again.

A real `salesbot serve` against a database of this test's own on the TEST_DATABASE_URL server: only
that database's backends are terminated and only it stops accepting connections, so suites running
beside this one on the same server are never touched.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.command import salesbot
from tests.conftest import STATE_SECRET, TEST_DATABASE_URL
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
