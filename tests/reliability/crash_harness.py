"""SIGKILL a process that stores tokens through TokenStore, many times, and check what survived.

A "zygote" process imports the service once and forks a writer per round (so a round costs
milliseconds, not an interpreter start). The writer runs WRITERS concurrent tasks; each task stores
token + UUID pairs (one store_tokens call: all or nothing) and overwrites a hot key with rising
versions. After each store_tokens returns, the task appends one line to an acknowledgement file with
a single write() and fsync: a line there is a write the store promised. The parent kills the writer
at a random moment (seeded), then at the end checks:

- PRAGMA integrity_check is "ok" and foreign_key_check finds nothing;
- every acknowledged pair reads back exactly, and no pair is half there (no UUID without its token);
- every hot key holds a version at least as new as its last acknowledged one.

Used by tests/reliability/test_crash.py (a few kills) and scripts/crash_soak.py (hundreds).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 4
NAMESPACE = uuid.UUID("6f1c3a52-8e0e-4d8e-9a4e-2b7f3f0c9d11")


def token_value(key: str, version: int = 0) -> str:
    return f"shpat_crash_{hashlib.sha256(f'{key}:{version}'.encode()).hexdigest()[:32]}_v{version}"


def account_for(shop: str) -> str:
    return str(uuid.uuid5(NAMESPACE, shop))


# --- the writer (runs in a forked child of the zygote) ---------------------------------------------


async def _write_forever(round_no: int, ack_path: str) -> None:
    from service.settings import Settings
    from service.vault import TokenStore, TokenWrite

    ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def acknowledge(line: str) -> None:
        os.write(ack, (line + "\n").encode())
        os.fsync(ack)

    async with TokenStore.open(Settings.from_environ(env_file=None)) as store:

        async def task(task_no: int) -> None:
            n = 0
            hot = f"SHOPIFY_ACCESS_TOKEN_hot-{task_no}"
            while True:
                shop = f"r{round_no}-t{task_no}-n{n}"
                account = account_for(shop)
                await store.store_tokens(
                    [
                        TokenWrite(f"SHOPIFY_ACCESS_TOKEN_{shop}", token_value(shop), "token"),
                        TokenWrite(f"USER_UUID_{shop}", account, "uuid"),
                    ]
                )
                acknowledge(f"pair {shop}")
                version = round_no * 1_000_000 + n
                await store.store_token(hot, token_value(hot, version))
                acknowledge(f"hot {hot} {version}")
                n += 1

        await asyncio.gather(*(task(t) for t in range(WRITERS)))


def zygote(ack_path: str) -> None:
    """Read "spawn N" lines; fork a writer for each; report "pid P" and, when it dies, "exit P STATUS"."""
    import service.vault  # noqa: F401  (imported once, before any fork)

    for line in sys.stdin:
        command = line.split()
        if command[:1] != ["spawn"]:
            break
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.run(_write_forever(int(command[1]), ack_path))
            finally:
                os._exit(3)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {pid} {status}", flush=True)


# --- the parent -------------------------------------------------------------------------------------


@dataclass
class SoakResult:
    kills: int = 0
    acknowledged_pairs: int = 0
    lost: list[str] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)
    stale_hot: list[str] = field(default_factory=list)
    integrity: str = ""
    foreign_keys: list = field(default_factory=list)
    mid_write_kills: int = 0  # kills that landed after the writer had acknowledged something

    @property
    def ok(self) -> bool:
        clean = not self.lost and not self.torn and not self.stale_hot
        return clean and self.integrity == "ok" and not self.foreign_keys

    def summary(self) -> str:
        return (
            f"kills {self.kills}, lost {len(self.lost)}, torn {len(self.torn)}, stale {len(self.stale_hot)}, "
            f"acknowledged pairs {self.acknowledged_pairs}, integrity {self.integrity}"
        )


def _ack_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    return lines[:-1]  # the last element is "" or a line cut short by the kill: not acknowledged


def run_kills(
    environ: dict[str, str], db_path: Path, ack_path: Path, *, kills: int, seed: int, max_delay: float = 0.06
) -> SoakResult:
    rng = random.Random(seed)
    result = SoakResult()
    zygote_process = subprocess.Popen(
        [sys.executable, "-c", f"from tests.reliability.crash_harness import zygote; zygote({str(ack_path)!r})"],
        env={**os.environ, **environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert zygote_process.stdin is not None and zygote_process.stdout is not None
    try:
        for round_no in range(kills):
            seen = len(_ack_lines(ack_path))
            zygote_process.stdin.write(f"spawn {round_no}\n")
            zygote_process.stdin.flush()
            pid = int(zygote_process.stdout.readline().split()[1])
            if rng.random() < 0.8:
                # Most kills land while writes are streaming: wait for this writer's first acknowledgement.
                deadline = time.monotonic() + 20
                while len(_ack_lines(ack_path)) == seen:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the writer acknowledged nothing within 20 s")
                    time.sleep(0.002)
                result.mid_write_kills += 1
            # The kill point itself is random: somewhere in the next few dozen commits.
            time.sleep(rng.uniform(0, max_delay))
            os.kill(pid, signal.SIGKILL)
            exited = zygote_process.stdout.readline().split()
            assert exited[:2] == ["exit", str(pid)], exited
            assert os.WIFSIGNALED(int(exited[2])) and os.WTERMSIG(int(exited[2])) == signal.SIGKILL, exited
            result.kills += 1
    finally:
        zygote_process.stdin.close()
        zygote_process.wait(timeout=10)
        zygote_process.stdout.close()
    check(db_path, ack_path, environ, result)
    return result


def check(db_path: Path, ack_path: Path, environ: dict[str, str], result: SoakResult) -> None:
    from service.crypto import KeyRing
    from service.settings import Settings

    ring = KeyRing.from_settings(Settings.from_environ(environ, env_file=None))
    connection = sqlite3.connect(db_path)
    try:
        result.integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
        result.foreign_keys = connection.execute("PRAGMA foreign_key_check").fetchall()
        rows = {
            key: (ring.decrypt(value, key_name=key), account)
            for key, value, account in connection.execute("SELECT key, value, account_uuid FROM tokens")
        }
    finally:
        connection.close()
    hot_acked: dict[str, int] = {}
    for line in _ack_lines(ack_path):
        kind, *rest = line.split()
        if kind == "pair":
            result.acknowledged_pairs += 1
            shop = rest[0]
            token, link = rows.get(f"SHOPIFY_ACCESS_TOKEN_{shop}"), rows.get(f"USER_UUID_{shop}")
            if token is None or link is None or token[0] != token_value(shop) or link[0] != account_for(shop):
                result.lost.append(shop)
        else:
            hot_acked[rest[0]] = max(hot_acked.get(rest[0], -1), int(rest[1]))
    # Atomicity, acknowledged or not: a pair is both rows or neither, on one account.
    for key in rows:
        if key.startswith("USER_UUID_r") or key.startswith("SHOPIFY_ACCESS_TOKEN_r"):
            shop = key.removeprefix("USER_UUID_").removeprefix("SHOPIFY_ACCESS_TOKEN_")
            token, link = rows.get(f"SHOPIFY_ACCESS_TOKEN_{shop}"), rows.get(f"USER_UUID_{shop}")
            if token is None or link is None or token[1] != link[1] or token[1] != account_for(shop):
                result.torn.append(shop)
    for key, version in hot_acked.items():
        stored = rows.get(key)
        stored_version = int(stored[0].rsplit("_v", 1)[1]) if stored else -1
        if stored is None or stored[0] != token_value(key, stored_version) or stored_version < version:
            result.stale_hot.append(key)
    result.torn = sorted(set(result.torn))
