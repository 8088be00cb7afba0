"""Crash safety: writers and `salesbot keys rotate` killed with SIGKILL at random points (fixed seeds).

scripts/crash_soak.py runs the same harness for hundreds of kills.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from service import migrate
from service.crypto import KeyRing
from service.settings import Settings, sqlite_url
from tests.conftest import base_environ
from tests.demo_server import salesbot_server
from tests.reliability.crash_harness import ROOT, run_kills

ONLY_BACKENDS = ["sqlite"]  # SIGKILL against a file database; PostgreSQL's durability is its own


def _environ(db: Path, keys: str | None = None) -> dict[str, str]:
    extra = {} if keys is None else {"TOKEN_ENCRYPTION_KEYS": keys}
    return base_environ(DATABASE_URL=sqlite_url(db), **extra)


def _migrated(environ: dict[str, str]) -> Settings:
    settings = Settings.from_environ(environ, env_file=None)
    migrate.upgrade(settings.database_url, KeyRing.from_settings(settings))
    return settings


def serve_answers(environ: dict[str, str], tmp_path: Path) -> None:
    """`salesbot serve` starts on the database the crashes left, and its health check says ok."""
    with salesbot_server("serve", env=environ, cwd=tmp_path) as base:
        response = httpx.get(f"{base}/healthz", timeout=5)
        assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_writers_killed_mid_write_lose_nothing_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "data" / "tokens.db"
    environ = _environ(db)
    _migrated(environ)
    result = run_kills(environ, db, tmp_path / "acks.log", kills=15, seed=20260611)
    assert result.kills == 15 and result.mid_write_kills >= 8
    assert result.acknowledged_pairs > 50, result.summary()  # the kills really interrupted a stream of writes
    assert result.integrity == "ok" and result.foreign_keys == []
    assert (result.lost, result.torn, result.stale_hot) == ([], [], []), result.summary()
    serve_answers(environ, tmp_path)


def _current_count(db: Path, primary: Fernet) -> int:
    """How many rows the rotation has moved to the primary key. It goes in key order and nothing else
    writes here, so the moved rows are a prefix of the key order: a binary search finds its end with a
    dozen decryptions instead of thousands, so the kill lands soon after the target (a full scan took
    long enough for the run to finish first, now that rotation is fast)."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        values = [row[0] for row in connection.execute("SELECT value FROM tokens ORDER BY key")]
    finally:
        connection.close()

    def current(index: int) -> bool:
        try:
            primary.decrypt(values[index].encode())
        except Exception:  # InvalidToken: still under the old key
            return False
        return True

    low, high = 0, len(values)
    while low < high:
        middle = (low + high) // 2
        if current(middle):
            low = middle + 1
        else:
            high = middle
    return low


def test_keys_rotate_killed_at_random_points_then_finishes(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    db = tmp_path / "data" / "tokens.db"
    rows = 3000
    expected = {f"FACEBOOK_ACCESS_TOKEN_{n:05d}": f"EAAP_rotate_{n}_{n * 7919 % 10007}" for n in range(rows)}

    import asyncio

    from service.vault import TokenStore, TokenWrite

    settings = _migrated(_environ(db, old))

    async def populate() -> None:
        async with TokenStore.open(settings) as store:
            await store.store_tokens([TokenWrite(key, value) for key, value in expected.items()])

    asyncio.run(populate())
    environ = {**os.environ, **_environ(db, f"{new},{old}"), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "service"]  # run in tmp_path: no .env there, the environment says all
    rng = random.Random(6)
    primary = Fernet(new)
    progress = [0]
    for _ in range(4):
        # Kill once a random further share of the rows has moved: always mid-run, never at a batch edge by design.
        target = progress[-1] + rng.randint(1, (rows - progress[-1]) // 3)
        process = subprocess.Popen(
            [*command, "keys", "rotate", "--batch-size", "50"],
            cwd=tmp_path,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while _current_count(db, primary) < target:
            assert process.poll() is None, "rotate finished before the kill point"
            assert time.monotonic() < deadline, "rotate made no progress"
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
        connection = sqlite3.connect(db)
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        connection.close()
        moved = _current_count(db, primary)
        assert progress[-1] < moved < rows
        progress.append(moved)
    finished = subprocess.run(
        [*command, "keys", "rotate"], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    assert f"{rows - progress[-1]:,} rows rewritten" in finished.stderr
    # Every value reads back exactly, with the new key alone.
    new_only = KeyRing([new])
    connection = sqlite3.connect(db)
    stored = dict(connection.execute("SELECT key, value FROM tokens"))
    connection.close()
    assert stored.keys() == expected.keys()
    assert [key for key, value in expected.items() if new_only.decrypt(stored[key], key_name=key) != value] == []
    serve_answers(_environ(db, new), tmp_path)
