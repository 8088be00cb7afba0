"""Throughput and peak memory of `keys rotate` and `import-db`, next to the bare Fernet cost, same run.

    .venv/bin/python scripts/bench_jobs.py [--rows 100000] [--batch-size 500]

Each job runs in a child process of its own on a fresh SQLite file in a temporary directory, so its
peak resident memory (getrusage ru_maxrss) is its own; the child also reports its resident memory
just before the job starts, after imports and setup, so the job's own share is the difference.
  rotate:    every row encrypted under an old key; the primary key is new, so all rows rotate.
  import-db: a seed-shaped tokens.db (key, value, type) encrypted with another STATE_TOKEN_SECRET,
             imported into an empty store (decrypt, encrypt under the primary key, upsert, link).
The bare figure is one Python loop of MultiFernet decrypt + Fernet encrypt over the same ciphertexts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.fernet import Fernet, MultiFernet  # noqa: E402

from service import migrate  # noqa: E402
from service.crypto import KeyRing, derive_seed_key  # noqa: E402
from service.settings import Settings, sqlite_url  # noqa: E402

STATE_SECRET = "bench-state-token-secret"
SOURCE_SECRET = "bench-other-deployment-secret"


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def settings_for(db: Path, keys: str) -> Settings:
    environ = {"STATE_TOKEN_SECRET": STATE_SECRET, "TOKEN_ENCRYPTION_KEYS": keys, "DATABASE_URL": sqlite_url(db)}
    return Settings.from_environ(environ, env_file=None)


def ciphertexts(fernet: Fernet, rows: int) -> list[tuple[str, str, str]]:
    return [
        (f"FACEBOOK_ACCESS_TOKEN_{n:07d}", fernet.encrypt(f"EAA{n:012d}x".encode()).decode(), "token")
        for n in range(rows)
    ]


def fill(db: Path, rows: list[tuple[str, str, str]]) -> None:
    connection = sqlite3.connect(db)
    with connection:
        connection.executemany("INSERT INTO tokens (key, value, type) VALUES (?, ?, ?)", rows)
    connection.close()


def seed_file(path: Path, rows: list[tuple[str, str, str]]) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE tokens (key TEXT PRIMARY KEY, value TEXT NOT NULL, type TEXT NOT NULL)")
    connection.close()
    fill(path, rows)


# --- children --------------------------------------------------------------------------------------


async def child(job: str, db: Path, keys: str, source: Path | None, batch_size: int) -> dict[str, float]:
    from service.jobs.import_db import import_db, source_ring
    from service.jobs.rotate import rotate_keys
    from service.vault import TokenStore

    settings = settings_for(db, keys)
    async with TokenStore.open(settings) as store:
        before = rss_mib()
        started = time.perf_counter()
        if job == "rotate":
            report = await rotate_keys(store, batch_size=batch_size)
            rows, ok = report.rewritten, report.ok
        else:
            assert source is not None
            ring = source_ring(keys.split(","), STATE_SECRET, SOURCE_SECRET)
            imported = await import_db(store, source, ring=ring, secret_label="SOURCE_SECRET", batch_size=batch_size)
            rows, ok = imported.count("imported"), imported.ok
        seconds = time.perf_counter() - started
    return {"rows": rows, "ok": ok, "seconds": seconds, "rss_before": before, "rss_peak": rss_mib()}


def run_child(*args: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def bare(ring: MultiFernet, primary: Fernet, values: list[str]) -> float:
    started = time.perf_counter()
    for value in values:
        primary.encrypt(ring.decrypt(value.encode()))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--child", nargs=4, metavar=("JOB", "DB", "KEYS", "SOURCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job, db, keys, source = args.child
        result = asyncio.run(child(job, Path(db), keys, Path(source) if source != "-" else None, args.batch_size))
        print(json.dumps(result))
        return

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        rotate_db = directory / "rotate.db"
        migrate.upgrade(sqlite_url(rotate_db), KeyRing.from_secrets([old], STATE_SECRET))
        rotate_rows = ciphertexts(Fernet(old), args.rows)
        fill(rotate_db, rotate_rows)
        rotated = run_child("rotate", str(rotate_db), f"{new},{old}", "-", "--batch-size", str(args.batch_size))

        source = directory / "seed-tokens.db"
        source_rows = ciphertexts(Fernet(derive_seed_key(SOURCE_SECRET)), args.rows)
        seed_file(source, source_rows)
        import_db = directory / "import.db"
        migrate.upgrade(sqlite_url(import_db), KeyRing.from_secrets([new], STATE_SECRET))
        imported = run_child("import-db", str(import_db), new, str(source), "--batch-size", str(args.batch_size))

        primary = Fernet(new)
        bare_rotate = bare(MultiFernet([primary, Fernet(old)]), primary, [value for _, value, _ in rotate_rows])
        seed_ring = MultiFernet(
            [primary, Fernet(derive_seed_key(SOURCE_SECRET)), Fernet(derive_seed_key(STATE_SECRET))]
        )
        bare_import = bare(seed_ring, primary, [value for _, value, _ in source_rows])

    print(
        f"{args.rows:,} tokens, batch size {args.batch_size}, SQLite (WAL, synchronous=FULL), "
        f"Python {sys.version.split()[0]}"
    )
    print(f"{'':34}{'rows':>9}{'seconds':>9}{'rows/s':>10}{'RSS before':>12}{'RSS peak':>10}")
    for label, result in (("salesbot keys rotate", rotated), ("salesbot import-db", imported)):
        print(
            f"{label:34}{int(result['rows']):>9,}{result['seconds']:>9.2f}{result['rows'] / result['seconds']:>10,.0f}"
            f"{result['rss_before']:>9.0f} MiB{result['rss_peak']:>6.0f} MiB" + ("" if result["ok"] else "  (NOT ok)")
        )
    for label, seconds in (
        ("bare Fernet decrypt+encrypt (rotate)", bare_rotate),
        ("bare Fernet decrypt+encrypt (import)", bare_import),
    ):
        print(f"{label:34}{args.rows:>9,}{seconds:>9.2f}{args.rows / seconds:>10,.0f}")


if __name__ == "__main__":
    main()
