"""`salesbot serve --workers N`: Shopify connections a second through serve, and a bot process's warm
reads a second beside it, with 1 and 2 workers, on SQLite and PostgreSQL; the bot's reads with serve idle
are the baseline, in the same run.

    .venv/bin/python scripts/bench_workers.py                 # about 3 minutes (docs/performance.md)
    .venv/bin/python scripts/bench_workers.py --seconds 5 --backends sqlite

Each case: a fresh database, serve and the sandbox on loopback, --warm seconds of connections first (so
the bot has stores to read); then, --seconds each: 32 browsers connecting stores as fast as serve takes
them (cycling over --shops names); one bot process reading `shop_connection` as fast as it can with serve
idle; the same while 4 browsers connect --rate stores a second (each write makes the bot's cache drop
what it changed). The sandbox and the clients share the 2 CPUs with serve, so a second worker competes
with them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from scripts.serve_load import bot_reads, connect_for, running_service, scratch_database, start_bot

CLIENTS = 32


@contextlib.contextmanager
def database(backend: str, admin_url: str, case: str) -> Iterator[str | None]:
    """None: serve's own SQLite file; else a PostgreSQL database of this case's own, dropped after."""
    if backend == "sqlite":
        yield None
        return
    with scratch_database(admin_url, f"salesbot_bench_workers_{os.getpid()}_{case}") as scratch:
        yield scratch


def run_case(backend: str, workers: int, args: argparse.Namespace) -> tuple[float, int, float, float]:
    """(connections/s, failed connections, bot reads/s with serve idle, bot reads/s beside steady connections)."""
    with (
        database(backend, args.postgres, f"{workers}") as url,
        running_service(workers=workers, database_url=url) as running,
    ):
        asyncio.run(connect_for(running.port, seconds=args.warm, clients=8, shops=args.shops))
        made, failed = asyncio.run(connect_for(running.port, seconds=args.seconds, clients=CLIENTS, shops=args.shops))
        idle = bot_reads(start_bot(running, seconds=args.seconds))
        bot = start_bot(running, seconds=args.seconds)
        asyncio.run(connect_for(running.port, seconds=args.seconds, clients=4, shops=args.shops, rate=args.rate))
        busy = bot_reads(bot)
    return made / args.seconds, failed, idle / args.seconds, busy / args.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each case is measured")
    parser.add_argument("--warm", type=float, default=3.0, help="seconds of connections before measuring")
    parser.add_argument("--shops", type=int, default=500, help="store names the connections cycle over")
    parser.add_argument("--rate", type=float, default=20.0, help="connections a second beside the bot's reads")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL")
    args = parser.parse_args()
    print(f"scripts/bench_workers.py: {args.seconds:g} s a case, {CLIENTS} browsers, {os.cpu_count()} CPUs")
    print(f"{'backend':<11}{'workers':>8}{'connections/s':>15}{'failed':>8}{'bot reads/s, idle':>19}", end="")
    print(f"{f'beside {args.rate:g} conn/s':>22}")
    for backend in args.backends.split(","):
        for workers in (1, 2):
            try:
                connects, failed, idle, busy = run_case(backend, workers, args)
            except (OSError, asyncpg.PostgresError) as error:
                print(f"{backend:<11}{workers:>8}  did not run ({type(error).__name__})")
                continue
            print(f"{backend:<11}{workers:>8}{connects:>15,.0f}{failed:>8}{idle:>19,.0f}{busy:>22,.0f}", flush=True)


if __name__ == "__main__":
    main()
