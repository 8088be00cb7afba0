"""The token path under the bot's load: ours next to the seed's TokenStorage and a raw floor.

    .venv/bin/python scripts/bench.py                       # full size, all workloads (about 20 minutes)
    .venv/bin/python scripts/bench.py --quick               # small sizes, one round: a smoke run
    .venv/bin/python scripts/bench.py --workloads 1,2 --rounds 5 --seed PATH/TO/seed
    .venv/bin/python scripts/bench.py --workloads 6,7,8,9,10,11   # the vault's workloads (scripts/bench_vault.py)

Without the seed chapter (no --seed folder, no SALESBOT_SEED_DIR, no `shared/seed` beside the checkout)
it says so in one line and runs ours and the floor.

Columns: `ours` is TokenStore (SQLAlchemy async over aiosqlite, cache and group commit); `seed` is
the seed chapter's own TokenStorage, loaded from its text (a new sqlite3 connection per call); `floor`
is the same work done by raw sqlite3 on one persistent connection plus Fernet, no cache: what one
uncached lookup or one committed write costs at the least. Each figure is the median of --rounds
runs, in fresh temporary files, on this machine and disk, in one run.

1 reads    --tokens tokens written by another process; --lookups Zipf(s=1.1) lookups: ours from 32
           coroutines on a store opened cold, seed and floor in a plain loop.
2 writes   --writes store_token calls from 32 concurrent writers (coroutines for ours, threads for the
           seed), at synchronous=FULL on both sides (read back with PRAGMA and printed); afterwards
           every row is read back through a new connection.
3 mixed    workload 1 with 1% store_token to the same keys; every read is checked against the newest
           value whose write had returned before the read began (stale reads must be 0).
4 connect  complete Shopify connections (login, callback, token exchange against the sandbox
           stand-in on loopback, stored) through `salesbot serve` under uvicorn, 32 concurrent
           clients; the ceiling is a bare Starlette endpoint on the same uvicorn. With --baseline REF
           the same workload also runs against the service as it is at git REF (exported beside the
           run, its own database migrated by its own code), in the same rounds: before and after.
5 start-up time from launching `salesbot serve` to the first 200 from /healthz; peak RSS (VmHWM) of
           the server after workload 4. Floor: a bare Starlette app under uvicorn.

6-11, in scripts/bench_vault.py (its docstring says what each measures): 6 one caller's sequential
store_token, 7 one caller's cold get_token, 8 both on PostgreSQL, 9 freshness across processes, 10 a
listing of 1,000,000 tokens, 11 get_shopify_token, page_connection and shop_connection against get_token.
PostgreSQL (--postgres) gets a scratch database made and dropped by the run; when it does not answer,
one line says so and the rest runs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.fernet import Fernet  # noqa: E402

from service import migrate  # noqa: E402
from service.crypto import KeyRing, derive_seed_key  # noqa: E402
from service.settings import Settings, sqlite_url  # noqa: E402
from service.vault import TokenStore, TokenWrite  # noqa: E402
from tests.demo_server import free_port, stop  # noqa: E402
from tests.seed_loader import DEFAULT_SEED_DIR, load_seed_module, seed_chapter_present  # noqa: E402

SECRET = "bench-state-token-secret-0123456789abcdef"  # 32+ characters, or `salesbot serve` refuses it
CONCURRENCY = 32
ZIPF_S = 1.1
# Counts reported as totals over all rounds; every other extra is the same in each round.
SUMMED = {"errors", "stale", "queries", "batches", "durable", "failures", "stored"}
SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


# --- small helpers -----------------------------------------------------------------------------


@dataclass
class Result:
    ops_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_result(count: int, elapsed: float, latencies_ns: Sequence[int], **extra: object) -> Result:
    return Result(
        count / elapsed, percentile(latencies_ns, 0.50) / 1e6, percentile(latencies_ns, 0.99) / 1e6, dict(extra)
    )


def median_result(results: Sequence[Result]) -> Result:
    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    extra: dict[str, object] = {}
    for name in results[0].extra:
        values = [r.extra[name] for r in results]
        extra[name] = sum(values) if name in SUMMED else values[-1]  # type: ignore[arg-type]
    return Result(
        med([r.ops_per_s for r in results]) or 0.0,
        med([r.p50_ms for r in results]),
        med([r.p99_ms for r in results]),
        extra,
    )


def zipf_keys(keys: Sequence[str], count: int, rng: random.Random) -> list[str]:
    weights = list(itertools.accumulate(1 / rank**ZIPF_S for rank in range(1, len(keys) + 1)))
    hot_order = list(keys)
    rng.shuffle(hot_order)  # the hottest Pages are not simply the first ones written
    return rng.choices(hot_order, cum_weights=weights, k=count)


def token_keys(count: int) -> list[str]:
    # Mostly Pages (the bot answers Messenger), some shops: the seed's vocabulary.
    return [f"SHOPIFY_ACCESS_TOKEN_shop{n}" if n % 10 == 0 else f"FACEBOOK_ACCESS_TOKEN_{n}" for n in range(count)]


def value_for(key: str, version: int) -> str:
    return f"EAA{'x' * 160}|{key}|v{version}"


def version_of(value: str | None) -> int:
    return -1 if value is None else int(value.rsplit("|v", 1)[1])


def table(title: str, columns: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    widths = [max(len(c), *(len(r[1][i]) for r in rows)) for i, c in enumerate(columns)]
    label = max(len(r[0]) for r in rows)
    lines = [title, f"{'':{label}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))]
    for name, cells in rows:
        lines.append(f"{name:{label}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def seed_ratio(results: dict[str, Result]) -> str:
    if "seed" not in results:
        return "- (no seed chapter)"
    return f"{results['ours'].ops_per_s / results['seed'].ops_per_s:.1f}x ops/s"


# --- the three sides -------------------------------------------------------------------------------


SEED_TABLE = "CREATE TABLE IF NOT EXISTS tokens (key TEXT PRIMARY KEY, value TEXT NOT NULL, type TEXT NOT NULL)"


class Sides:
    """Databases and settings for one round: ours (migrated by Alembic), the seed's, the floor's."""

    def __init__(self, directory: Path, seed_module: object | None, key: str | None = None) -> None:
        # key: our TOKEN_ENCRYPTION_KEYS (a new key unless given; scripts/bench_vault.py gives the seed's).
        self.directory = directory
        self.seed_module = seed_module
        self.environ = {
            "STATE_TOKEN_SECRET": SECRET,
            "TOKEN_ENCRYPTION_KEYS": key or Fernet.generate_key().decode(),
            "DATABASE_URL": sqlite_url(directory / "ours.db"),
        }
        self.settings = Settings.from_environ(self.environ, env_file=None)
        self.fernet = Fernet(derive_seed_key(SECRET))  # the seed's key: floor and seed share its files
        migrate.upgrade(self.settings.database_url, KeyRing.from_settings(self.settings))

    def seed_storage(self, name: str = "seed.db") -> object:
        assert self.seed_module is not None
        os.environ["STATE_TOKEN_SECRET"] = SECRET
        return self.seed_module.TokenStorage(db_path=str(self.directory / name))  # type: ignore[attr-defined]

    def fill_seed(self, name: str, keys: Sequence[str]) -> None:
        """The seed's table (made by the seed's code for the seed, by its DDL for the floor), filled."""
        connection = sqlite3.connect(self.directory / name)
        if name == "seed.db":
            self.seed_storage(name)
        else:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(SEED_TABLE)
        with connection:
            connection.executemany(
                "INSERT OR REPLACE INTO tokens (key, value, type) VALUES (?, ?, 'token')",
                [(key, self.fernet.encrypt(value_for(key, 0).encode()).decode()) for key in keys],
            )
        connection.close()

    def fill_ours_from_another_process(self, count: int) -> None:
        script = (
            "import asyncio, json, sys\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "from scripts.bench import fill_ours\n"
            "asyncio.run(fill_ours(json.loads(sys.argv[1]), int(sys.argv[2])))\n"
        )
        subprocess.run([sys.executable, "-c", script, json.dumps(self.environ), str(count)], check=True, timeout=600)


async def fill_ours(environ: dict[str, str], count: int) -> None:
    """Run in another process: the reader's cache must start as cold as after a restart."""
    keys = token_keys(count)
    async with TokenStore.open(Settings.from_environ(environ, env_file=None)) as store:
        for start in range(0, len(keys), 500):
            await store.store_tokens([TokenWrite(key, value_for(key, 0)) for key in keys[start : start + 500]])


def floor_connection(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    return connection


# --- workload 1 and 3: reads, and reads with 1% writes --------------------------------------------


async def ours_reads(settings: Settings, lookups: Sequence[str], write_every: int = 0) -> Result:
    latencies: list[int] = []
    acked: dict[str, int] = {}  # newest version whose store_token had returned
    counter = itertools.count(1)
    stale = errors = 0

    async with TokenStore.open(settings) as store:

        async def worker(offset: int) -> None:
            nonlocal stale, errors
            for index in range(offset, len(lookups), CONCURRENCY):
                key = lookups[index]
                if write_every and index % write_every == 0:
                    version = next(counter)
                    await store.store_token(key, value_for(key, version))
                    acked[key] = max(acked.get(key, 0), version)
                    continue
                required = acked.get(key, 0)
                began = time.perf_counter_ns()
                try:
                    value = await store.get_token(key)
                except Exception:
                    errors += 1
                    continue
                latencies.append(time.perf_counter_ns() - began)
                if version_of(value) < required:
                    stale += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
        queries = store.stats["queries"]
    return latency_result(len(lookups), elapsed, latencies, stale=stale, errors=errors, queries=queries)


def loop_reads(
    get: Callable[[str], str | None], put: Callable[[str, str], None], lookups: Sequence[str], write_every: int = 0
) -> Result:
    latencies: list[int] = []
    latest: dict[str, int] = {}
    stale = errors = 0
    counter = itertools.count(1)
    started = time.perf_counter()
    for index, key in enumerate(lookups):
        if write_every and index % write_every == 0:
            version = next(counter)
            put(key, value_for(key, version))
            latest[key] = version
            continue
        began = time.perf_counter_ns()
        try:
            value = get(key)
        except Exception:
            errors += 1
            continue
        latencies.append(time.perf_counter_ns() - began)  # reads only: p50/p99 are read latencies
        if version_of(value) < latest.get(key, 0):
            stale += 1
    elapsed = time.perf_counter() - started
    return latency_result(len(lookups), elapsed, latencies, stale=stale, errors=errors)


def floor_get_put(path: Path, fernet: Fernet) -> tuple[Callable[[str], str | None], Callable[[str, str], None]]:
    connection = floor_connection(path)

    def get(key: str) -> str | None:
        row = connection.execute("SELECT value FROM tokens WHERE key = ?", (key,)).fetchone()
        return None if row is None else fernet.decrypt(row[0].encode()).decode()

    def put(key: str, value: str) -> None:
        connection.execute(
            "INSERT OR REPLACE INTO tokens (key, value, type) VALUES (?, ?, 'token')",
            (key, fernet.encrypt(value.encode()).decode()),
        )

    return get, put


def run_reads(args: argparse.Namespace, write_every: int) -> dict[str, Result]:
    rounds: dict[str, list[Result]] = {"ours": [], "seed": [], "floor": []}
    keys = token_keys(args.tokens)
    for round_number in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            sides = Sides(Path(tmp), args.seed_module)
            sides.fill_ours_from_another_process(len(keys))
            sides.fill_seed("floor.db", keys)
            lookups = zipf_keys(keys, args.lookups, random.Random(round_number))
            rounds["ours"].append(asyncio.run(ours_reads(sides.settings, lookups, write_every)))
            if args.seed_module is not None:
                sides.fill_seed("seed.db", keys)
                seed = sides.seed_storage()
                rounds["seed"].append(loop_reads(seed.get_token, seed.store_token, lookups, write_every))
            get, put = floor_get_put(sides.directory / "floor.db", sides.fernet)
            rounds["floor"].append(loop_reads(get, put, lookups, write_every))
    return {side: median_result(results) for side, results in rounds.items() if results}


def print_reads(title: str, results: dict[str, Result], mixed: bool) -> None:
    names = ["ops/s", "p50 ms", "p99 ms", "errors"] + (["stale reads"] if mixed else [])
    rows = []
    for side in ("ours", "seed", "floor"):
        r = results.get(side)
        if r is None:
            rows.append((side, ["-"] * len(names)))
            continue
        cells = [fmt_rate(r.ops_per_s), fmt_ms(r.p50_ms), fmt_ms(r.p99_ms), str(r.extra["errors"])]
        if mixed:
            cells.append(str(r.extra["stale"]))
        rows.append((side, cells))
    print(table(title, names, rows))
    queries = results["ours"].extra["queries"]
    print(f"ours / seed: {seed_ratio(results)}; queries by ours (cold misses, batched): {queries}")
    print()


# --- workload 2: writes ------------------------------------------------------------------------------


async def ours_writes(settings: Settings, count: int) -> Result:
    latencies: list[int] = []
    errors = 0
    async with TokenStore.open(settings) as store:
        async with store.engine.connect() as connection:
            synchronous = (await connection.exec_driver_sql("PRAGMA synchronous")).scalar()

        async def writer(offset: int) -> None:
            nonlocal errors
            for n in range(offset, count, CONCURRENCY):
                key = f"FACEBOOK_ACCESS_TOKEN_{n}"
                began = time.perf_counter_ns()
                try:
                    await store.store_token(key, value_for(key, 1))
                except Exception:
                    errors += 1
                latencies.append(time.perf_counter_ns() - began)

        started = time.perf_counter()
        await asyncio.gather(*(writer(n) for n in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
        batches = store.stats["write_batches"]
    return latency_result(count, elapsed, latencies, errors=errors, synchronous=synchronous, batches=batches)


def threaded_writes(put: Callable[[str, str], None], count: int) -> tuple[float, list[int], int]:
    latencies: list[int] = []
    errors = 0
    lock = threading.Lock()

    def writer(offset: int) -> None:
        nonlocal errors
        for n in range(offset, count, CONCURRENCY):
            key = f"FACEBOOK_ACCESS_TOKEN_{n}"
            began = time.perf_counter_ns()
            try:
                put(key, value_for(key, 1))
            except Exception:
                with lock:
                    errors += 1
            with lock:
                latencies.append(time.perf_counter_ns() - began)

    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(writer, range(CONCURRENCY)))
    return time.perf_counter() - started, latencies, errors


def count_durable(path: Path, fernet: Fernet | None, count: int) -> int:
    """Rows readable through a brand-new connection after the run: every acknowledged write."""
    connection = sqlite3.connect(path)
    try:
        rows = dict(connection.execute("SELECT key, value FROM tokens"))
    finally:
        connection.close()
    good = 0
    for n in range(count):
        key = f"FACEBOOK_ACCESS_TOKEN_{n}"
        if key in rows and (fernet is None or fernet.decrypt(rows[key].encode()).decode() == value_for(key, 1)):
            good += 1
    return good


def seed_synchronous(path: Path) -> int:
    # What the seed's own connections run at: sqlite3.connect + journal_mode=WAL, nothing else set.
    connection = sqlite3.connect(path)
    try:
        return connection.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        connection.close()


def run_writes(args: argparse.Namespace) -> dict[str, Result]:
    rounds: dict[str, list[Result]] = {"ours": [], "seed": [], "floor": []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            sides = Sides(Path(tmp), args.seed_module)
            ours = asyncio.run(ours_writes(sides.settings, args.writes))
            ring = KeyRing.from_settings(sides.settings)
            durable = sum(
                1
                for key, value in _read_ours(sides.directory / "ours.db")
                if key.startswith("FACEBOOK_ACCESS_TOKEN_") and ring.decrypt(value) == value_for(key, 1)
            )
            ours.extra["durable"] = durable
            rounds["ours"].append(ours)

            if args.seed_module is not None:
                seed = sides.seed_storage()
                elapsed, latencies, errors = threaded_writes(seed.store_token, args.writes)
                rounds["seed"].append(
                    latency_result(
                        args.writes,
                        elapsed,
                        latencies,
                        errors=errors,
                        synchronous=seed_synchronous(sides.directory / "seed.db"),
                        durable=count_durable(sides.directory / "seed.db", sides.fernet, args.writes),
                    )
                )

            sides.fill_seed("floor.db", [])
            connection = floor_connection(sides.directory / "floor.db")
            floor_lock = threading.Lock()

            def floor_put(
                key: str,
                value: str,
                connection: sqlite3.Connection = connection,
                fernet: Fernet = sides.fernet,
                floor_lock: threading.Lock = floor_lock,
            ) -> None:
                ciphertext = fernet.encrypt(value.encode()).decode()
                with floor_lock:  # one connection, one commit per write
                    connection.execute(
                        "INSERT OR REPLACE INTO tokens (key, value, type) VALUES (?, ?, 'token')", (key, ciphertext)
                    )

            elapsed, latencies, errors = threaded_writes(floor_put, args.writes)
            synchronous = connection.execute("PRAGMA synchronous").fetchone()[0]
            connection.close()
            rounds["floor"].append(
                latency_result(
                    args.writes,
                    elapsed,
                    latencies,
                    errors=errors,
                    synchronous=synchronous,
                    durable=count_durable(sides.directory / "floor.db", sides.fernet, args.writes),
                )
            )
    return {side: median_result(results) for side, results in rounds.items() if results}


def _read_ours(path: Path) -> list[tuple[str, str]]:
    connection = sqlite3.connect(path)
    try:
        return list(connection.execute("SELECT key, value FROM tokens"))
    finally:
        connection.close()


def print_writes(results: dict[str, Result], args: argparse.Namespace) -> None:
    rows = []
    for side in ("ours", "seed", "floor"):
        r = results.get(side)
        if r is None:
            rows.append((side, ["-"] * 6))
            continue
        rows.append(
            (
                side,
                [
                    fmt_rate(r.ops_per_s),
                    fmt_ms(r.p50_ms),
                    fmt_ms(r.p99_ms),
                    str(r.extra["errors"]),
                    SYNC_NAMES.get(r.extra["synchronous"], str(r.extra["synchronous"])),  # type: ignore[call-overload]
                    f"{r.extra['durable']:,}/{args.writes * args.rounds:,}",
                ],
            )
        )
    print(
        table(
            f"2. writes: {args.writes:,} store_token, {CONCURRENCY} concurrent writers",
            ["ops/s", "p50 ms", "p99 ms", "errors", "synchronous", "read back, all rounds"],
            rows,
        )
    )
    batches = results["ours"].extra["batches"]
    print(f"ours / seed: {seed_ratio(results)}; ours committed in {batches} batches (all rounds)")
    print()


# --- workloads 4 and 5: connections through `salesbot serve`, start-up and memory -----------------

SANDBOX_SERVER = """
import sys, uvicorn
sys.path.insert(0, {root!r})
from salesbot_sandbox import Sandbox, SandboxConfig
sandbox = Sandbox(SandboxConfig(shopify_api_key={key!r}, shopify_api_secret={secret!r},
                                facebook_app_id="1", facebook_app_secret="x"))
uvicorn.run(sandbox.app, host="127.0.0.1", port={port}, log_level="warning", access_log=False)
"""
BARE_SERVER = """
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def ok(request):
    return PlainTextResponse("ok")

uvicorn.run(Starlette(routes=[Route("/healthz", ok)]), host="127.0.0.1", port={port}, log_level="warning",
            access_log=False)
"""
SHOPIFY_KEY, SHOPIFY_SECRET = "bench-shopify-key", "shpss_bench_secret"


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 30.0) -> float:
    """Seconds from now until GET /healthz answers 200."""
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"server on port {port} did not answer within {timeout} s")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (/proc/PID/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def consent_form(page: str, base: str) -> tuple[str, dict[str, str]]:
    import re
    from html import unescape
    from urllib.parse import urljoin

    for form in re.finditer(r"<form\b([^>]*)>(.*?)</form>", page, flags=re.S):
        if 'id="allow"' in form.group(2):
            action = re.search(r'action="([^"]*)"', form.group(1))
            fields = dict(re.findall(r'<input[^>]*name="([^"]*)"[^>]*value="([^"]*)"', form.group(2)))
            return urljoin(base, unescape(action.group(1) if action else "")), {
                unescape(k): unescape(v) for k, v in fields.items()
            }
    raise RuntimeError("no consent form with #allow")


async def connect_clients(port: int, count: int) -> tuple[float, list[int], int]:
    import httpx

    latencies: list[int] = []
    failures = 0
    shops = iter(range(count))

    async def client() -> None:
        nonlocal failures
        async with httpx.AsyncClient(follow_redirects=True, timeout=30.0) as browser:
            for n in shops:
                began = time.perf_counter_ns()
                try:
                    consent = await browser.get(f"http://127.0.0.1:{port}/shopify/bench-{n}/login")
                    action, fields = consent_form(consent.text, str(consent.url))
                    done = await browser.post(action, data=fields)
                    ok = done.status_code == 200 and str(done.url).startswith(f"http://127.0.0.1:{port}/")
                except Exception:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter_ns() - began)
                else:
                    failures += 1
                browser.cookies.clear()  # the next connection is another merchant's browser

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started, latencies, failures


async def bare_clients(port: int, count: int) -> tuple[float, list[int], int]:
    import httpx

    latencies: list[int] = []
    failures = 0
    requests = iter(range(count))

    async def client() -> None:
        nonlocal failures
        async with httpx.AsyncClient(timeout=30.0) as browser:
            for _ in requests:
                began = time.perf_counter_ns()
                response = await browser.get(f"http://127.0.0.1:{port}/healthz")
                if response.status_code == 200:
                    latencies.append(time.perf_counter_ns() - began)
                else:
                    failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started, latencies, failures


def connect_available() -> bool:
    try:
        from salesbot_sandbox import Sandbox  # noqa: F401
        from service.routes import shopify  # noqa: F401
    except ImportError:
        return False
    return True


def export_ref(ref: str, into: Path) -> Path:
    """The repository as it is at git `ref`, in a folder of its own (no worktree, nothing registered)."""
    target = into / "baseline"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def connect_baseline(checkout: Path, environ: dict[str, str], count: int, directory: Path) -> Result:
    """Workload 4 against the service of another checkout: `python -m service` run in that folder
    imports that folder's `service` (the current directory comes first on sys.path)."""
    port = free_port()
    database = directory / "baseline.db"
    environ = {
        **environ,
        "DATABASE_URL": sqlite_url(database),
        "SHOPIFY_REDIRECT_URI": f"http://127.0.0.1:{port}/shopify/callback",
    }
    command = [sys.executable, "-m", "service"]
    subprocess.run([*command, "migrate"], cwd=checkout, env=environ, check=True, capture_output=True)
    service = subprocess.Popen(
        [*command, "serve", "--port", str(port), "--log-level", "warning"], cwd=checkout, env=environ
    )
    try:
        wait_healthy(port, service)
        cpu = cpu_seconds(service.pid)
        elapsed, latencies, failures = asyncio.run(connect_clients(port, count))
        cpu_ms = (cpu_seconds(service.pid) - cpu) * 1000 / count
        stored = sum(1 for key, _ in _read_ours(database) if key.startswith("SHOPIFY_ACCESS"))
        rss = peak_rss_mb(service.pid)
        return latency_result(count, elapsed, latencies, failures=failures, stored=stored, rss=rss, cpu_ms=cpu_ms)
    finally:
        stop(service)


def run_server_workloads(args: argparse.Namespace) -> dict[str, list[Result]]:
    rounds: dict[str, list[Result]] = {"connect": [], "bare": [], "startup": [], "bare_startup": [], "baseline": []}
    baseline_dir = tempfile.TemporaryDirectory() if args.baseline else None
    checkout = export_ref(args.baseline, Path(baseline_dir.name)) if baseline_dir is not None else None
    for round_no in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            sides = Sides(Path(tmp), None)  # the seed has no server side here (see print_server_workloads)
            sandbox_port, service_port, bare_port = free_port(), free_port(), free_port()
            environ = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("SHOPIFY_", "FACEBOOK_", "TOKEN_"))},
                **sides.environ,
                "SHOPIFY_API_KEY": SHOPIFY_KEY,
                "SHOPIFY_API_SECRET": SHOPIFY_SECRET,
                "SHOPIFY_REDIRECT_URI": f"http://127.0.0.1:{service_port}/shopify/callback",
                "SHOPIFY_ADMIN_BASE_URL": f"http://127.0.0.1:{sandbox_port}/shopify/{{shop}}",
            }
            sandbox = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    SANDBOX_SERVER.format(root=str(ROOT), key=SHOPIFY_KEY, secret=SHOPIFY_SECRET, port=sandbox_port),
                ],
                cwd=tmp,
            )
            bare = service = None
            try:
                wait_healthy_any(sandbox_port, sandbox)
                if checkout is not None and round_no % 2 == 1:  # alternate which goes first
                    rounds["baseline"].append(connect_baseline(checkout, environ, args.connections, Path(tmp)))
                launched = time.perf_counter()
                service = subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "salesbot"),
                        "serve",
                        "--port",
                        str(service_port),
                        "--log-level",
                        "warning",
                    ],
                    cwd=tmp,
                    env=environ,
                )
                wait_healthy(service_port, service)
                rounds["startup"].append(Result(0.0, extra={"seconds": time.perf_counter() - launched}))
                launched = time.perf_counter()
                bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER.format(port=bare_port)], cwd=tmp)
                wait_healthy(bare_port, bare)
                rounds["bare_startup"].append(Result(0.0, extra={"seconds": time.perf_counter() - launched}))

                cpu = cpu_seconds(service.pid)
                elapsed, latencies, failures = asyncio.run(connect_clients(service_port, args.connections))
                cpu_ms = (cpu_seconds(service.pid) - cpu) * 1000 / args.connections
                stored = sum(
                    1 for key, _ in _read_ours(sides.directory / "ours.db") if key.startswith("SHOPIFY_ACCESS")
                )
                rounds["connect"].append(
                    latency_result(
                        args.connections,
                        elapsed,
                        latencies,
                        failures=failures,
                        stored=stored,
                        rss=peak_rss_mb(service.pid),
                        cpu_ms=cpu_ms,
                    )
                )
                if checkout is not None and round_no % 2 == 0:
                    stop(service)
                    service = None
                    rounds["baseline"].append(connect_baseline(checkout, environ, args.connections, Path(tmp)))
                elapsed, latencies, failures = asyncio.run(bare_clients(bare_port, args.connections * 4))
                rounds["bare"].append(
                    latency_result(
                        args.connections * 4, elapsed, latencies, failures=failures, stored=0, rss=peak_rss_mb(bare.pid)
                    )
                )
            finally:
                for process in (service, bare, sandbox):
                    if process is not None:
                        stop(process)
    if baseline_dir is not None:
        baseline_dir.cleanup()
    return rounds


def wait_healthy_any(port: int, process: subprocess.Popen) -> None:
    # The sandbox has no /healthz: any HTTP answer means it listens.
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < 30:
        if process.poll() is not None:
            raise RuntimeError("the sandbox server exited")
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.01)
    raise RuntimeError("the sandbox server did not start")


def baseline_rows(rounds: dict[str, list[Result]], args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    if not rounds["baseline"]:
        return []
    before = median_result(rounds["baseline"])
    cells = [fmt_rate(before.ops_per_s), fmt_ms(before.p50_ms), fmt_ms(before.p99_ms)]
    cells += [str(before.extra["failures"]), f"{before.extra['stored']:,}"]
    return [(f"baseline: the same at {args.baseline}", cells)]


def print_server_workloads(rounds: dict[str, list[Result]], args: argparse.Namespace) -> None:
    connect, bare = median_result(rounds["connect"]), median_result(rounds["bare"])
    rows = [
        (
            "ours: Shopify connections",
            [
                fmt_rate(connect.ops_per_s),
                fmt_ms(connect.p50_ms),
                fmt_ms(connect.p99_ms),
                str(connect.extra["failures"]),
                f"{connect.extra['stored']:,}",
            ],
        ),
        ("seed", ["-", "-", "-", "-", "-"]),
        *baseline_rows(rounds, args),
        (
            "ceiling: bare GET, same uvicorn",
            [fmt_rate(bare.ops_per_s), fmt_ms(bare.p50_ms), fmt_ms(bare.p99_ms), str(bare.extra["failures"]), "-"],
        ),
    ]
    print(
        table(
            f"4. connect: {args.connections:,} Shopify connections (login, consent, callback, token exchange on "
            f"loopback, stored), {CONCURRENCY} clients",
            ["per s", "p50 ms", "p99 ms", "failures", "stored, all rounds"],
            rows,
        )
    )
    if rounds["baseline"]:
        before = median_result(rounds["baseline"])
        each = " ".join(
            f"{ours.ops_per_s / theirs.ops_per_s:.0%}"
            for ours, theirs in zip(rounds["connect"], rounds["baseline"], strict=True)
        )
        ours_cpu = statistics.median(r.extra["cpu_ms"] for r in rounds["connect"])  # type: ignore[misc]
        their_cpu = statistics.median(r.extra["cpu_ms"] for r in rounds["baseline"])  # type: ignore[misc]
        print(
            f"service CPU per connection: ours {ours_cpu:.2f} ms, baseline {their_cpu:.2f} ms "
            f"({ours_cpu / their_cpu:.1%}; user+system time of the serve process over the workload)"
        )
        print(
            f"ours / baseline ({args.baseline}): {connect.ops_per_s / before.ops_per_s:.1%} of its connections per "
            f"second (medians of {len(rounds['baseline'])} rounds, alternating which ran first; each round: {each})"
        )
    print(
        f"ours / ceiling: {connect.ops_per_s / bare.ops_per_s:.1%} (a connection is 5 browser requests, "
        "3 to the service and 2 to the stand-in, plus the service's token exchange)"
    )
    print(
        "seed: its chapter serves FastAPI, not installed here; and it keeps OAuth state in a second SQLite file,"
        " so there is no like-for-like run"
    )
    print()
    startup = statistics.median(r.extra["seconds"] for r in rounds["startup"])  # type: ignore[misc]
    bare_startup = statistics.median(r.extra["seconds"] for r in rounds["bare_startup"])  # type: ignore[misc]
    rss = statistics.median(r.extra["rss"] for r in rounds["connect"])  # type: ignore[misc]
    bare_rss = statistics.median(r.extra["rss"] for r in rounds["bare"])  # type: ignore[misc]
    print(
        table(
            "5. start-up and memory",
            ["launch to first 200 /healthz, s", "peak RSS after workload 4, MB"],
            [
                ("ours: salesbot serve", [f"{startup:.2f}", f"{rss:.0f}"]),
                ("seed", ["-", "-"]),
                ("floor: bare Starlette on uvicorn", [f"{bare_startup:.2f}", f"{bare_rss:.0f}"]),
            ],
        )
    )
    print()


# --- main --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seed", type=Path, default=DEFAULT_SEED_DIR, help="the seed chapter's folder (default: %(default)s)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=5_000)
    parser.add_argument("--connections", type=int, default=2_000)
    parser.add_argument("--workloads", default="1,2,3,4,5,6,7,8,9,10,11")
    parser.add_argument("--quick", action="store_true", help="1 round and small sizes: a smoke run")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a server for workloads 8, 9 and 11, which make and drop a database of their own (default: %(default)s)",
    )
    parser.add_argument("--listing-tokens", type=int, help="workload 10's size (default 1,000,000; --quick 5,000)")
    parser.add_argument(
        "--baseline", metavar="REF", help="workload 4 also against the service at git REF (e.g. main): before/after"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.tokens, args.lookups, args.writes, args.connections = 1, 2_000, 20_000, 1_000, 300
    wanted = {int(part) for part in args.workloads.split(",")}
    args.seed_module = load_seed_module(args.seed) if seed_chapter_present(args.seed) else None
    if args.seed_module is None:
        print(f"scripts/bench.py: no seed chapter in {args.seed} (--seed DIR): running ours and the floor only")
    print(
        f"scripts/bench.py: rounds={args.rounds} tokens={args.tokens:,} lookups={args.lookups:,} "
        f"writes={args.writes:,} connections={args.connections:,}; {os.cpu_count()} CPUs; medians of rounds"
    )
    print()
    if 1 in wanted:
        results = run_reads(args, write_every=0)
        print_reads(f"1. reads: {args.lookups:,} Zipf lookups over {args.tokens:,} tokens", results, mixed=False)
    if 2 in wanted:
        print_writes(run_writes(args), args)
    if 3 in wanted:
        results = run_reads(args, write_every=100)
        print_reads(f"3. mixed: {args.lookups:,} operations, 1% store_token", results, mixed=True)
    if wanted & {4, 5}:
        if connect_available():
            print_server_workloads(run_server_workloads(args), args)
        else:
            print("4. connect / 5. start-up: PENDING (the routes or the stand-ins, salesbot_sandbox, not there yet)")
    if wanted & set(range(6, 12)):
        from scripts import bench_vault  # here, not at the top: it imports this module

        bench_vault.run(wanted, args)


if __name__ == "__main__":
    main()
