"""The vault on PostgreSQL next to Shopify's own session storage, the peer a Shopify app team would use.

    .venv/bin/python scripts/bench_peer.py                      # 5 rounds, 3,000 shops, 20,000 warm lookups
    .venv/bin/python scripts/bench_peer.py --rounds 3 --shops 2000 --postgres postgresql://postgres@127.0.0.1/postgres

The peer is `@shopify/shopify-app-session-storage-postgresql` at the version scripts/peer/package.json
pins, installed with `npm ci` from the committed package-lock.json into ~/.cache/salesbot-bench/peer
(once; again when the lock changes) and driven by scripts/peer/driver.js. Without `node` and `npm`, or
when the install fails, it says why in one line and stops.

What each side does per operation:
  peer  storeSession: one INSERT ... ON CONFLICT DO UPDATE of the session's columns, plaintext token, in
        autocommit on a pg.Pool of 10 connections (its defaults). loadSession: one SELECT *, no cache.
  ours  store_token: the token encrypted (Fernet), one upsert plus the event log's row, committed before
        the call returns; concurrent writes share a transaction (group commit). get_shopify_token: a
        cache of decrypted entries; a miss is one prepared SELECT (misses meanwhile share one), then
        decrypted. Connections: one reader (also LISTEN), writer(s) as postgres.py says.

Workloads, --shops shops each: store at 1 and 32 concurrent callers (the first inserts, the second
overwrites every shop with a new value); load cold (a fresh process, every shop once in a shuffled order)
at 1 and 32 callers; load warm (every shop loaded once untimed, then --lookups Zipf(s=1.1) lookups) at
1 and 32 callers. Every phase runs in a fresh process of its side; the two sides alternate which goes
first; every load is checked against the value last stored (wrong loads are counted and printed). The
figure per workload is the median over rounds of ours/peer in operations per second (> 1: ours faster).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

PEER = ROOT / "scripts" / "peer"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "salesbot-bench" / "peer"
SECRET = "bench-state-token-secret-0123456789abcdef"
KEY = "0" * 43 + "="  # a valid Fernet key (32 zero bytes): a benchmark's, never a deployment's
ZIPF_S = 1.1
CALLERS = (1, 32)
# (label, phase, callers, warm)
WORKLOADS = [(f"store, {c}", "store", c, False) for c in CALLERS] + [
    (f"load {kind}, {c}", "load", c, kind == "warm") for kind in ("cold", "warm") for c in CALLERS
]


def value_for(round_: int, version: int, shop: int) -> str:
    """The token stored for a shop: what driver.js's valueFor makes too."""
    return "shpat_" + hashlib.md5(f"{round_}:{version}:{shop}".encode()).hexdigest()  # a fixed token, not a secret


def domain(shop: int) -> str:
    return f"bench-{shop}.myshopify.com"


# --- the peer's install ------------------------------------------------------------------------


def install_peer() -> str | None:
    """The folder whose node_modules holds the pinned peer, or None after saying why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        print(f"skipped: {'node' if node is None else 'npm'} is not on PATH, so Shopify's adapter cannot run here")
        return None
    lock = (PEER / "package-lock.json").read_bytes()
    stamp = CACHE / ".installed"
    if stamp.exists() and stamp.read_bytes() == hashlib.sha256(lock).hexdigest().encode():
        return str(CACHE)
    CACHE.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(PEER / name, CACHE / name)
    done = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=CACHE,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"skipped: npm ci of scripts/peer/package-lock.json into {CACHE} failed: {last}")
        return None
    stamp.write_bytes(hashlib.sha256(lock).hexdigest().encode())
    return str(CACHE)


# --- one phase, one process --------------------------------------------------------------------


def run_side(side: str, job: dict[str, Any], peer_dir: str) -> dict[str, Any]:
    if side == "peer":
        command = ["node", str(PEER / "driver.js"), json.dumps(job)]
        environ = {**os.environ, "NODE_PATH": str(Path(peer_dir) / "node_modules")}
    else:
        command = [sys.executable, __file__, "--child", json.dumps(job)]
        environ = dict(os.environ)
    done = subprocess.run(command, capture_output=True, text=True, env=environ, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed in {job['phase']}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def ours(job: dict[str, Any]) -> dict[str, Any]:
    from service import keys
    from service.providers.shopify import shop_key
    from service.settings import Settings
    from service.vault import TokenStore

    settings = Settings.from_environ(
        {"STATE_TOKEN_SECRET": SECRET, "TOKEN_ENCRYPTION_KEYS": KEY, "DATABASE_URL": job["url"]}, env_file=None
    )
    wrong = 0
    async with TokenStore.open(settings) as store:
        if job["phase"] == "store":
            items = list(range(job["shops"]))
            names = {shop: keys.shopify_token_key(shop_key(domain(shop))) for shop in items}

            async def work(shop: int) -> None:
                await store.store_token(names[shop], value_for(job["round"], job["version"], shop))
        else:
            items = job["lookups"]

            async def work(shop: int) -> None:
                nonlocal wrong
                wrong += await store.get_shopify_token(domain(shop)) != value_for(job["round"], job["version"], shop)

            if job["warm"]:
                await in_parallel(job["callers"], list(range(job["shops"])), work)
                wrong = 0
        began = time.perf_counter()
        await in_parallel(job["callers"], items, work)
        seconds = time.perf_counter() - began
    return {"ops": len(items), "seconds": seconds, "wrong": wrong}


async def in_parallel(callers: int, items: list[int], work: Any) -> None:
    iterator = iter(items)

    async def caller() -> None:
        for item in iterator:
            await work(item)

    await asyncio.gather(*(caller() for _ in range(callers)))


# --- the run -----------------------------------------------------------------------------------


async def admin(dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def zipf(shops: int, count: int, rng: random.Random) -> list[int]:
    weights = [1 / (rank**ZIPF_S) for rank in range(1, shops + 1)]
    order = list(range(shops))
    rng.shuffle(order)
    return rng.choices(order, weights=weights, k=count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shops", type=int, default=3000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(ours(json.loads(args.child)))))
        return
    peer_dir = install_peer()
    if peer_dir is None:
        return
    from service import migrate
    from service.crypto import KeyRing
    from service.settings import Settings

    server = make_url(args.postgres).set(drivername="postgresql")
    name = f"salesbot_peer_{os.getpid()}"
    admin_dsn = server.render_as_string(hide_password=False)
    try:
        asyncio.run(admin(admin_dsn, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as error:
        print(f"skipped: PostgreSQL at {server.host}:{server.port or 5432} did not answer ({type(error).__name__})")
        return
    try:
        dsn = server.set(database=name).render_as_string(hide_password=False)
        url = server.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
        settings = Settings.from_environ(
            {"STATE_TOKEN_SECRET": SECRET, "TOKEN_ENCRYPTION_KEYS": KEY, "DATABASE_URL": url}, env_file=None
        )
        migrate.upgrade(url, KeyRing.from_settings(settings))
        run(args, dsn, url, peer_dir)
    finally:
        asyncio.run(admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run(args: argparse.Namespace, dsn: str, url: str, peer_dir: str) -> None:
    rng = random.Random(22)
    ratios: dict[str, list[float]] = {name: [] for name, *_ in WORKLOADS}
    rates: dict[str, dict[str, list[float]]] = {name: {"ours": [], "peer": []} for name, *_ in WORKLOADS}
    wrong = {"ours": 0, "peer": 0}
    print(f"{args.rounds} rounds, {args.shops:,} shops, {args.lookups:,} warm lookups; node {node_version()}")
    for round_ in range(args.rounds):
        tables = "tokens, accounts, connection_events, event_deliveries"
        peer_table = ", shopify_sessions" if round_ else ""
        asyncio.run(admin(dsn, f"TRUNCATE {tables}{peer_table} CASCADE"))
        cold = list(range(args.shops))
        rng.shuffle(cold)
        warm = zipf(args.shops, args.lookups, rng)
        for index, (name, phase, callers, is_warm) in enumerate(WORKLOADS):
            version = 1 if (phase == "store" and callers == 1) else 2
            job = {
                "dsn": dsn,
                "url": url,
                "phase": phase,
                "callers": callers,
                "shops": args.shops,
                "round": round_,
                "version": version,
                "warm": is_warm,
                "lookups": (warm if is_warm else cold) if phase == "load" else None,
            }
            order = ["ours", "peer"] if (round_ + index) % 2 == 0 else ["peer", "ours"]
            rate = {}
            for side in order:
                result = run_side(side, job, peer_dir)
                wrong[side] += result["wrong"]
                rate[side] = result["ops"] / result["seconds"]
                rates[name][side].append(rate[side])
            ratios[name].append(rate["ours"] / rate["peer"])
        print(f"  round {round_ + 1}: " + ", ".join(f"{name}: {ratios[name][-1]:.2f}x" for name, *_ in WORKLOADS))
    print()
    print(f"{'workload (PostgreSQL)':24} {'ours op/s':>10} {'peer op/s':>10}  {'ours/peer (median, range)':>26}")
    for name, _phase, callers, _warm in WORKLOADS:
        label = f"{name} caller{'s' if callers > 1 else ''}"
        r, ours_rate, peer_rate = ratios[name], rates[name]["ours"], rates[name]["peer"]
        print(
            f"{label:24} {statistics.median(ours_rate):>10,.0f} {statistics.median(peer_rate):>10,.0f}"
            f"  {statistics.median(r):>8.2f}x ({min(r):.2f}-{max(r):.2f})"
        )
    print(f"wrong loads: ours {wrong['ours']}, peer {wrong['peer']} (must be 0)")


def node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout.strip()


if __name__ == "__main__":
    main()
