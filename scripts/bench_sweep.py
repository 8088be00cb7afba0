"""What the sweep costs the process that serves: event-loop stalls and request latency, idle beside sweeping.

    .venv/bin/python scripts/bench_sweep.py [--connections 100000] [--seconds 10] [--postgres URL]

One process, as `salesbot serve` runs: the app under uvicorn on loopback and the sweep's rounds in the
same event loop (its lifespan task), over a database holding `--connections` connections (half stores
with refreshable tokens, half Pages; a fifth of the stores in use and due within the sweep's lead, a
tenth with their refresh chain ending, every Page never checked). The providers are the stand-ins
(salesbot_sandbox) under uvicorn in a process of their own, as remote providers are to the service;
they do not know the made-up tokens, so every refresh answers invalid_grant and every check "not
valid": each item still costs a provider round trip and a write, as a real one does.

Another process sends requests for `--seconds`: `GET /` as JSON for an account with a store and a
Page (its listing read, the removals read, the page's JSON), one at a time. First idle (the baseline),
then while sweep rounds run back to back. A ticker in the event loop records how late each 1 ms sleep
wakes: the longest lateness is the longest the loop was held, by us or by a shared machine; the
longest single callback in this thread's CPU time is ours alone. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from salesbot_sandbox import Sandbox, SandboxConfig  # noqa: E402
from service import logs, migrate  # noqa: E402
from service.app import create_app  # noqa: E402
from service.crypto import KeyRing, generate_key  # noqa: E402
from service.models import utcnow  # noqa: E402
from service.settings import Settings, sqlite_url  # noqa: E402
from service.sweep import PAGE_CHECKS_PER_ROUND as PAGE_CHECKS  # noqa: E402
from service.sweep import REFRESHES_PER_ROUND as REFRESHES  # noqa: E402
from service.sweep import Sweep  # noqa: E402
from service.vault import TokenStore, TokenWrite  # noqa: E402
from service.vault.planner import plan_note_used  # noqa: E402

SHOPIFY_KEY, SHOPIFY_SECRET = "bench-shopify-key", "bench-shopify-secret"
FACEBOOK_ID, FACEBOOK_SECRET = "4242", "bench-facebook-secret"
BATCH = 2000  # rows per seeding transaction
COOKIE = "salesbot_session"


def free_socket() -> socket.socket:
    sock = socket.socket()
    # As `uvicorn.run` leaves its connections: without it, each answer waits out the client's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def serve_providers(port: int, app_url: str) -> None:
    """Child process: the stand-ins on loopback, as remote providers are to the service."""
    config = SandboxConfig(SHOPIFY_KEY, SHOPIFY_SECRET, FACEBOOK_ID, FACEBOOK_SECRET, service_base_url=app_url)
    uvicorn.run(Sandbox(config).app, host="127.0.0.1", port=port, log_level="error", access_log=False, lifespan="off")


@contextmanager
def providers_in_a_process(app_url: str) -> Iterator[str]:
    with free_socket() as probe:
        port = probe.getsockname()[1]
    child = subprocess.Popen([sys.executable, __file__, "--serve-providers", str(port), app_url])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/messenger", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError("the stand-ins did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        child.terminate()
        child.wait(timeout=10)


def settings_for(database_url: str, app_url: str, providers: str) -> Settings:
    environ = {
        "STATE_TOKEN_SECRET": "bench-state-token-secret-0123456789abcdef",
        "TOKEN_ENCRYPTION_KEYS": generate_key(),
        "DATABASE_URL": database_url,
        "SHOPIFY_API_KEY": SHOPIFY_KEY,
        "SHOPIFY_API_SECRET": SHOPIFY_SECRET,
        "SHOPIFY_REDIRECT_URI": f"{app_url}/shopify/callback",
        "SHOPIFY_ADMIN_BASE_URL": f"{providers}/shopify/{{shop}}",
        "FACEBOOK_APP_ID": FACEBOOK_ID,
        "FACEBOOK_APP_SECRET": FACEBOOK_SECRET,
        "FACEBOOK_REDIRECT_URI": f"{app_url}/facebook/callback",
        "FACEBOOK_DIALOG_BASE_URL": f"{providers}/facebook",
        "FACEBOOK_GRAPH_BASE_URL": f"{providers}/graph",
        "HTTP_TIMEOUT_SECONDS": "10",
    }
    return Settings.from_environ(environ, env_file=None)


async def seed(settings: Settings, connections: int) -> None:
    """Half stores, half Pages, written through the vault as the flows write them."""
    now = utcnow()
    shops = connections // 2
    async with TokenStore.open(settings) as store:
        writes: list[TokenWrite] = []
        used: list[str] = []
        for n in range(shops):
            due = n % 5 == 0  # in use, expiring within the sweep's lead
            ending = n % 10 == 1  # quiet, its refresh chain ending within 30 days
            expires = now + timedelta(minutes=7) if due else now - timedelta(days=1)
            chain = now + timedelta(days=20 if ending else 80)
            key = f"SHOPIFY_ACCESS_TOKEN_bench-{n:06d}"
            metadata = {"expires_at": expires, "refresh_token": f"shprt_bench_{n}", "refresh_expires_at": chain}
            writes.append(TokenWrite(key, f"shpat_bench_{n}", "token", metadata))
            if due:
                used.append(key)
        for n in range(connections - shops):
            writes.append(TokenWrite(f"FACEBOOK_ACCESS_TOKEN_{9_000_000 + n}", f"EAAP_bench_{n}", "token"))
        for start in range(0, len(writes), BATCH):
            await store.store_tokens(writes[start : start + BATCH])
        for start in range(0, len(used), BATCH):
            await store.write(plan_note_used(used[start : start + BATCH], now))


async def session_cookie(app_url: str) -> str:
    """The session of a browser whose account holds a store and a Page, connected through the flows."""
    async with httpx.AsyncClient(base_url=app_url, follow_redirects=True, timeout=30) as browser:
        for path, button in (("/shopify/acme-bench/login", "allow"), ("/facebook/login", "allow")):
            page = await browser.get(path)
            await submit(browser, page, button)
        return str(browser.cookies[COOKIE])


async def submit(browser: httpx.AsyncClient, page: httpx.Response, button: str) -> httpx.Response:
    import re
    from html import unescape
    from urllib.parse import urljoin

    for form in re.finditer(r"<form\b([^>]*)>(.*?)</form>", page.text, flags=re.S):
        if f'id="{button}"' in form.group(2):
            action = unescape(re.search(r'action="([^"]*)"', form.group(1)).group(1))  # type: ignore[union-attr]
            fields = dict(re.findall(r'<input[^>]*name="([^"]*)"[^>]*value="([^"]*)"', form.group(2)))
            response = await browser.post(urljoin(str(page.url), action), data=fields)
            if response.url.path == "/facebook/pages":  # more than one Page: take the form as it comes
                token = dict(re.findall(r'name="(csrf_token)" value="([^"]*)"', response.text))["csrf_token"]
                data = {"csrf_token": token, "action": "connect", "page": ["101"]}
                response = await browser.post("/facebook/pages", data=data)
            return response
    raise RuntimeError(f"no #{button} on {page.url}")


def send_requests(app_url: str, cookie: str, seconds: float) -> None:
    """Child process: `GET /` as JSON, one at a time, for `seconds`; the latencies as one JSON line."""
    latencies = []
    with httpx.Client(base_url=app_url, cookies={COOKIE: cookie}, timeout=30) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = client.get("/", headers={"accept": "application/json"})
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200 or not response.json()["account"]:
                raise SystemExit(f"unexpected answer {response.status_code}")
    print(json.dumps(latencies))


async def requests_from_another_process(app_url: str, cookie: str, seconds: float) -> list[float]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--send-requests", app_url, cookie, str(seconds), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError("the request sender failed")
    return json.loads(out)  # type: ignore[no-any-return]


class CallbackClock:
    """The longest single event-loop callback in CPU time (this thread's): what our code holds the loop
    for, apart from the waits a shared machine adds (another process on the core, another thread on the
    GIL), which the ticker's lateness includes."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._run = asyncio.events.Handle._run

    def __enter__(self) -> CallbackClock:
        clock, run = self, self._run

        def timed(handle: asyncio.events.Handle) -> None:
            started = time.thread_time()
            run(handle)
            clock.longest = max(clock.longest, time.thread_time() - started)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.events.Handle._run = self._run  # type: ignore[method-assign]


async def ticker(stop: asyncio.Event, lateness: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        lateness.append(time.perf_counter() - started - 0.001)


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)  # seconds, one per request
    lateness: list[float] = field(default_factory=list)  # seconds, one per ticker wake-up
    callback_cpu: float = 0.0  # the longest callback, seconds of CPU
    p99s: list[float] = field(default_factory=list)  # each phase's request p99 (ms)
    rounds: int = 0
    shops: int = 0
    pages: int = 0


async def phase(app_url: str, cookie: str, seconds: float, sweep: Sweep | None, into: Samples) -> None:
    lateness: list[float] = []
    stop = asyncio.Event()
    callbacks = CallbackClock().__enter__()
    ticking = asyncio.create_task(ticker(stop, lateness))
    load = asyncio.create_task(requests_from_another_process(app_url, cookie, seconds))
    while not load.done():
        if sweep is None:
            await asyncio.sleep(0.05)
            continue
        report = await sweep.round()
        into.rounds += 1
        into.shops += report.refreshed + len(report.refused) + report.refresh_failed
        into.pages += report.pages_checked
        if not (report.refreshed + len(report.refused) + report.refresh_failed + report.pages_checked):
            await asyncio.sleep(0.5)  # nothing left to do: a real sweep would wait for its next round
    latencies = await load
    stop.set()
    await ticking
    callbacks.__exit__()
    into.latencies += latencies
    into.lateness += lateness
    into.callback_cpu = max(into.callback_cpu, callbacks.longest)
    into.p99s.append(p(latencies, 0.99))


def summary(samples: Samples) -> dict[str, float]:
    return {
        "requests": len(samples.latencies),
        "p50": p(samples.latencies, 0.50),
        "p99": p(samples.latencies, 0.99),
        "stall_max": max(samples.lateness) * 1000,
        "stall_p99": p(samples.lateness, 0.99),
        "callback_cpu": samples.callback_cpu * 1000,
    }


async def run(args: argparse.Namespace, database_url: str) -> None:
    app_socket = free_socket()
    app_url = f"http://127.0.0.1:{app_socket.getsockname()[1]}"
    with providers_in_a_process(app_url) as providers:
        settings = settings_for(database_url, app_url, providers)
        await migrate.upgrade_async(settings.database_url, KeyRing.from_settings(settings))
        started = time.perf_counter()
        await seed(settings, args.connections)
        print(f"seeded {args.connections:,} connections in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        app = create_app(settings, sweep_every=1e9, prune_every=1e9)  # the bench runs the rounds itself
        server = uvicorn.Server(uvicorn.Config(app, log_level="error", access_log=False))
        serving = asyncio.create_task(server.serve(sockets=[app_socket]))
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
            await asyncio.sleep(0.01)
        idle, sweeping = Samples(), Samples()
        try:
            cookie = await session_cookie(app_url)
            services = app.state.services
            # Rounds a tenth of the service's (the same pace, 25 calls a second), so that idle and sweeping
            # phases can alternate: a machine shared with others then weighs on both alike.
            sweep = Sweep(services.store, services.http, page_checks=PAGE_CHECKS // 10, refreshes=REFRESHES // 10)
            for _ in range(args.pairs):
                await phase(app_url, cookie, args.seconds, None, idle)
                await phase(app_url, cookie, args.seconds, sweep, sweeping)
        finally:
            server.should_exit = True
            await serving
    report(args, database_url, idle, sweeping)


def report(args: argparse.Namespace, database_url: str, idle: Samples, sweeping: Samples) -> None:
    backend = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    print(
        f"\nSweep beside serving, {args.connections:,} connections, {backend}, "
        f"{args.pairs} x ({args.seconds:g} s idle, {args.seconds:g} s sweeping)"
    )
    print(f"{'':<34}{'idle (baseline)':>18}{'sweeping':>14}{'ratio':>9}")
    before, during = summary(idle), summary(sweeping)
    rows = [
        ("requests served", "requests", "{:,.0f}"),
        ("request p50 (ms)", "p50", "{:.2f}"),
        ("request p99 (ms)", "p99", "{:.2f}"),
        ("event loop held, longest (ms)", "stall_max", "{:.1f}"),
        ("event loop held, p99 (ms)", "stall_p99", "{:.2f}"),
        ("longest callback, CPU (ms)", "callback_cpu", "{:.1f}"),
    ]
    for label, name, shape in rows:
        ratio = during[name] / before[name] if before[name] else float("nan")
        print(f"{label:<34}{shape.format(before[name]):>18}{shape.format(during[name]):>14}{ratio:>8.2f}x")
    ratios = sorted(after / first for first, after in zip(idle.p99s, sweeping.p99s, strict=True))
    each = ", ".join(f"{ratio:.2f}x" for ratio in ratios)
    print(f"request p99 ratio in each pair: {each} (median {statistics.median(ratios):.2f}x)")
    print(f"sweep: {sweeping.rounds} rounds; shops refreshed or refused {sweeping.shops:,}, ", end="")
    print(f"Pages checked {sweeping.pages:,}")


async def _on_server(server: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(server, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def scratch_postgres(server_url: str) -> Iterator[str]:
    """A database of this run's own on the PostgreSQL server `server_url` names; dropped on the way out."""
    from sqlalchemy.engine import make_url

    admin = make_url(server_url).set(drivername="postgresql")
    server = admin.render_as_string(hide_password=False)
    name = f"salesbot_bench_sweep_{os.getpid()}"
    asyncio.run(_on_server(server, f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_on_server(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100_000, help="stores and Pages in the database")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase (idle, sweeping)")
    parser.add_argument("--pairs", type=int, default=3, help="idle and sweeping phases, alternating")
    parser.add_argument(
        "--postgres", metavar="URL", help="a PostgreSQL server: the run makes its own database there, then drops it"
    )
    parser.add_argument("--serve-providers", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--send-requests", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_providers:
        serve_providers(int(args.serve_providers[0]), args.serve_providers[1])
        return
    if args.send_requests:
        send_requests(args.send_requests[0], args.send_requests[1], float(args.send_requests[2]))
        return
    # The service's log lines (every refused refresh and every Page found invalid here is one) are
    # written as serve writes them, but to /dev/null: their cost stays in the figures, off the screen.
    with open(os.devnull, "w") as devnull:
        handler = logging.StreamHandler(devnull)
        handler.setFormatter(logs.TextFormatter())
        logging.basicConfig(level=logging.WARNING, handlers=[handler])
        measure(args)


def measure(args: argparse.Namespace) -> None:
    if args.postgres:
        with scratch_postgres(args.postgres) as database_url:
            asyncio.run(run(args, database_url))
        return
    with tempfile.TemporaryDirectory(prefix="salesbot-bench-sweep-") as folder:
        asyncio.run(run(args, sqlite_url(Path(folder) / "tokens.db")))


if __name__ == "__main__":
    main()
