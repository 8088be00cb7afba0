"""A change and its event commit together or not at all: a writer killed at any moment leaves both or
neither (test_event_crash_postgres.py kills one exactly between the two)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time

from service.settings import Settings
from service.vault import TokenStore
from tests.command import ROOT
from tests.conftest import base_environ
from tests.events.helpers import fingerprint

WRITER = """
import asyncio, os, sys
from service import TokenStore

async def main(first, count):
    async with TokenStore.open(os.environ["DATABASE_URL"]) as store:
        for n in range(first, first + count):
            await store.store_token(f"FACEBOOK_ACCESS_TOKEN_{n}", f"EAA-crash-{n}")

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""
ROUNDS = 4


def start_writer(database_url: str, first: int, count: int) -> subprocess.Popen:
    environ = {**base_environ(DATABASE_URL=database_url), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(first), str(count)], env=environ)


async def both_or_neither(settings: Settings) -> int:
    """Every stored token has its token_set event with its fingerprint, and every event its token."""
    async with TokenStore.open(settings) as store:
        tokens = await store.get_all_tokens_by_type("token")
        events = {event.key: event.fingerprint for event in await store.event_log.list(limit=100_000)}
    assert set(tokens) == set(events), (sorted(set(tokens) ^ set(events)))[:5]
    for key, value in tokens.items():
        assert events[key] == fingerprint(value), key
    return len(tokens)


async def rows(settings: Settings) -> int:
    async with TokenStore.open(settings) as store:
        return await store.bulk.count()


def test_a_writer_killed_at_random_moments_leaves_each_change_with_its_event_or_neither(migrated: Settings) -> None:
    rng = random.Random(19)
    first = 0
    for _ in range(ROUNDS):
        writer = start_writer(migrated.database_url, first, 100_000)
        target = asyncio.run(rows(migrated)) + rng.randint(5, 40)
        while asyncio.run(rows(migrated)) < target:
            assert writer.poll() is None, "the writer stopped by itself"
            time.sleep(0.01)
        time.sleep(rng.random() * 0.02)  # a random moment among the writes, not a wait for anything
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        stored = asyncio.run(both_or_neither(migrated))
        assert stored >= target
        first += 100_000
