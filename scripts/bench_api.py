"""The HTTP API's cost (docs/api.md), against baselines measured in the same run on the same server:

- `GET /api/v1/pages/{id}` (key checked in the database, the Page's connection from the vault's cache)
  beside `GET /healthz` (one `SELECT 1`): target, p50 within 2x;
- `POST /api/v1/shops/{shop}/graphql` (key, the shop's token, the request forwarded by shopify_client)
  beside the same query sent straight to the stand-in with the token: target, under 2 ms more at p50.

    .venv/bin/python scripts/bench_api.py                     # SQLite, 2000 requests a side (~1 minute)
    .venv/bin/python scripts/bench_api.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres

One client on one keep-alive connection, requests in turns (healthz, page, healthz, page ...), so both
sides meet the same machine. serve runs one worker; the stand-in runs in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from scripts.serve_load import Running, connect, running_service, scratch_database
from service.settings import DEFAULT_SHOPIFY_API_VERSION

SHOP = "bench-api"
PAGE = "101"
# Cost 1 at the stand-in's GraphQL bucket (1000 points, 50 a second back), so neither side is throttled.
QUERY = b'{"query": "{ shop { name } }"}'


def command(running: Running, *args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "salesbot"), *args],
        cwd=running.folder,
        env=running.environ,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def timed(call: Callable[[], httpx.Response]) -> float:
    started = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.method} {response.request.url.path} answered {response.status_code}")
    return elapsed * 1000


def in_turns(
    a: Callable[[], httpx.Response], b: Callable[[], httpx.Response], n: int
) -> tuple[list[float], list[float]]:
    for _ in range(50):  # warm: connections, caches, the key's row in the page cache
        a(), b()
    first, second = [], []
    for _ in range(n):
        first.append(timed(a))
        second.append(timed(b))
    return first, second


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def row(label: str, values: list[float]) -> str:
    return f"{label:<44}{p(values, 50):>9.3f}{p(values, 90):>9.3f}{p(values, 99):>9.3f}"


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str | None]:
    """None: serve's own SQLite file; else a PostgreSQL database of this run's own, dropped after."""
    if url is None:
        yield None
        return
    with scratch_database(url, f"salesbot_bench_api_{os.getpid()}") as scratch:
        yield scratch


async def _connect_shop(port: int) -> None:
    async with httpx.AsyncClient(timeout=30, follow_redirects=True) as browser:
        if not await connect(port, SHOP, browser):
            raise RuntimeError("the store did not connect")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests a side")
    parser.add_argument("--database-url", help="a PostgreSQL server to make a database on (default: SQLite)")
    args = parser.parse_args()
    with (
        database(args.database_url) as url,
        running_service(workers=1, database_url=url, API_RATE_PER_MINUTE="10000000") as running,
    ):
        asyncio.run(_connect_shop(running.port))
        command(running, "tokens", "set", f"FACEBOOK_ACCESS_TOKEN_{PAGE}", "EAA-bench-page-token")
        read = command(running, "api-keys", "create", "--name", "bench-read", "--scope", "read")
        proxy = command(running, "api-keys", "create", "--name", "bench-proxy", "--scope", "proxy")
        token = command(running, "tokens", "get", f"SHOPIFY_ACCESS_TOKEN_{SHOP}")
        domain = f"{SHOP}.myshopify.com"
        admin = running.environ["SHOPIFY_ADMIN_BASE_URL"].format(shop=domain)
        direct_url = f"{admin}/admin/api/{DEFAULT_SHOPIFY_API_VERSION}/graphql.json"  # what serve's client calls
        base = f"http://127.0.0.1:{running.port}"
        with httpx.Client(base_url=base, timeout=30) as client, httpx.Client(timeout=30) as straight:
            health, page = in_turns(
                lambda: client.get("/healthz"),
                lambda: client.get(f"/api/v1/pages/{PAGE}", headers={"authorization": f"Bearer {read}"}),
                args.requests,
            )
            json_headers = {"content-type": "application/json"}
            direct, proxied = in_turns(
                lambda: straight.post(
                    direct_url, content=QUERY, headers={**json_headers, "x-shopify-access-token": token}
                ),
                lambda: client.post(
                    f"/api/v1/shops/{SHOP}/graphql",
                    content=QUERY,
                    headers={**json_headers, "authorization": f"Bearer {proxy}"},
                ),
                # The stand-in's bucket: 1000 points and 50 a second back; both sides spend one a request.
                min(args.requests, 400),
            )
    backend = "PostgreSQL" if url else "SQLite"
    print(f"HTTP API, {backend}, one serve worker, one client, requests in turns")
    print(f"{'ms':<44}{'p50':>9}{'p90':>9}{'p99':>9}")
    print(row("GET /healthz (baseline)", health))
    print(row(f"GET /api/v1/pages/{PAGE} (read key)", page))
    print(row("POST graphql.json at the stand-in (baseline)", direct))
    print(row(f"POST /api/v1/shops/{SHOP}/graphql", proxied))
    ratio = p(page, 50) / p(health, 50)
    overhead = p(proxied, 50) - p(direct, 50)
    print(f"page / healthz at p50: {ratio:.2f}x (target under 2x)")
    print(f"proxy overhead at p50: {overhead:.2f} ms (target under 2 ms)")


if __name__ == "__main__":
    main()
