"""Store and get throughput of TokenStore next to the seed's TokenStorage, same machine, same run.

    .venv/bin/python scripts/bench_store.py [--rows 2000] [--rounds 3] [--seed ../shared/seed]

Each side writes --rows tokens one call at a time, then reads each back once, in a fresh SQLite
file under a temporary directory; figures are the median of --rounds. The seed runs as its chapter
wrote it (a new sqlite3 connection per call, synchronous=FULL by default in WAL). Ours runs its
calls one after another from one coroutine, so both sides do the same sequential work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.fernet import Fernet  # noqa: E402

from service import migrate  # noqa: E402
from service.crypto import KeyRing  # noqa: E402
from service.settings import Settings, sqlite_url  # noqa: E402
from service.store import TokenStore  # noqa: E402
from tests.seed_loader import load_seed_module  # noqa: E402

SECRET = "bench-state-token-secret"


def bench_seed(directory: Path, rows: int, seed_dir: Path) -> tuple[float, float]:
    os.environ["STATE_TOKEN_SECRET"] = SECRET
    storage = load_seed_module(seed_dir).TokenStorage(db_path=str(directory / "seed.db"))
    started = time.perf_counter()
    for n in range(rows):
        storage.store_token(f"FACEBOOK_ACCESS_TOKEN_{n}", f"EAA{n:08d}")
    stored = time.perf_counter()
    for n in range(rows):
        storage.get_token(f"FACEBOOK_ACCESS_TOKEN_{n}")
    done = time.perf_counter()
    return rows / (stored - started), rows / (done - stored)


async def bench_ours(directory: Path, rows: int) -> tuple[float, float]:
    settings = Settings.from_environ(
        {
            "STATE_TOKEN_SECRET": SECRET,
            "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "DATABASE_URL": sqlite_url(directory / "ours.db"),
        },
        env_file=None,
    )
    await migrate.upgrade_async(settings.database_url, KeyRing.from_settings(settings))
    async with TokenStore.open(settings) as store:
        started = time.perf_counter()
        for n in range(rows):
            await store.store_token(f"FACEBOOK_ACCESS_TOKEN_{n}", f"EAA{n:08d}")
        stored = time.perf_counter()
        for n in range(rows):
            await store.get_token(f"FACEBOOK_ACCESS_TOKEN_{n}")
        done = time.perf_counter()
    return rows / (stored - started), rows / (done - stored)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=Path, default=ROOT.parent / "shared" / "seed")
    args = parser.parse_args()
    seed, ours = [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            seed.append(bench_seed(Path(tmp), args.rows, args.seed))
            ours.append(asyncio.run(bench_ours(Path(tmp), args.rows)))
    print(f"rows={args.rows} rounds={args.rounds} (median ops/s, sequential calls, synchronous=FULL both sides)")
    print(f"{'':24}{'store ops/s':>14}{'get ops/s':>14}")
    for name, results in (("seed TokenStorage", seed), ("TokenStore (ours)", ours)):
        store_rate, get_rate = (statistics.median(r[i] for r in results) for i in (0, 1))
        print(f"{name:24}{store_rate:>14,.0f}{get_rate:>14,.0f}")


if __name__ == "__main__":
    main()
