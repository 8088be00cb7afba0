"""A writer killed exactly between its token and its event: the test holds the PostgreSQL lock that the
event's insert takes (vault/events.py), so the writer stops right there. A transaction (two rows in one
call: BEGIN, the upserts, the event, COMMIT) leaves neither. A lone write is one statement (the upsert,
then the lock, then the event) that the server already holds whole: once the lock is free it ends that
statement as the database decides, both or neither, never a token without its event."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import asyncpg
import pytest

from service.settings import Settings
from service.vault import TokenStore
from tests.command import ROOT
from tests.conftest import base_environ
from tests.events.helpers import fingerprint
from tests.reliability.test_event_crash import start_writer

# Two tokens in one store_tokens call: one plan of two rows, run in a transaction of its own.
PAIR_WRITER = """
import asyncio, os, sys
from service import TokenStore
from service.vault import TokenWrite

async def main(first):
    async with TokenStore.open(os.environ["DATABASE_URL"]) as store:
        pair = [TokenWrite(f"FACEBOOK_ACCESS_TOKEN_{n}", f"EAA-crash-{n}") for n in (first, first + 1)]
        await store.store_tokens(pair)

asyncio.run(main(int(sys.argv[1])))
"""

ONLY_BACKENDS = ["postgres"]
pytestmark = pytest.mark.postgres  # without TEST_DATABASE_URL these are deselected, as every PostgreSQL case

LOCK = "SELECT pg_advisory_lock(hashtextextended('salesbot connection_events', 0))"
UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('salesbot connection_events', 0))"
WAITING = (
    "SELECT pid FROM pg_stat_activity WHERE application_name = 'salesbot vault writer' "
    "AND wait_event_type = 'Lock' AND datname = current_database()"
)
GONE = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
WROTE_TOKENS = (
    "SELECT count(*) FROM pg_locks WHERE pid = $1 AND relation = 'tokens'::regclass AND mode = 'RowExclusiveLock'"
)


def start_pair_writer(database_url: str, first: int) -> subprocess.Popen:
    environ = {**base_environ(DATABASE_URL=database_url), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", PAIR_WRITER, str(first)], env=environ)


def kill_at_the_event_lock(migrated: Settings, start: Callable[[], subprocess.Popen]) -> None:
    """Start a writer while holding the event log's lock, kill it once it waits there (having written its
    token rows), release the lock and wait until its backend is gone."""

    async def scenario() -> None:
        holder = await asyncpg.connect(migrated.database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await holder.execute(LOCK)
            writer = start()
            deadline = time.monotonic() + 30
            while not (waiting := await holder.fetch(WAITING)):
                assert writer.poll() is None and time.monotonic() < deadline, "the writer never reached the lock"
                await asyncio.sleep(0.01)
            # Its token statement ran (it holds a write lock on `tokens`); its event's insert waits on our lock.
            assert await holder.fetchval(WROTE_TOKENS, waiting[0]["pid"]) == 1
            # Kill it there.
            writer.send_signal(signal.SIGKILL)
            writer.wait()
            await holder.execute(UNLOCK)
            while await holder.fetchval(GONE, waiting[0]["pid"]):
                assert time.monotonic() < deadline, "the killed writer's transaction did not end"
                await asyncio.sleep(0.01)
        finally:
            await holder.close()

    asyncio.run(scenario())


async def state(migrated: Settings, *numbers: int) -> tuple[list[str | None], list[tuple[str, str | None]]]:
    async with TokenStore.open(migrated) as store:
        tokens = [await store.get_token(f"FACEBOOK_ACCESS_TOKEN_{n}") for n in numbers]
        return tokens, [(event.kind, event.fingerprint) for event in await store.event_log.list()]


def test_a_transaction_killed_between_its_tokens_and_their_events_leaves_neither(migrated: Settings) -> None:
    kill_at_the_event_lock(migrated, lambda: start_pair_writer(migrated.database_url, 7))
    assert asyncio.run(state(migrated, 7, 8)) == ([None, None], [])
    # The same write, not stopped: both.
    writer = start_pair_writer(migrated.database_url, 7)
    assert writer.wait(timeout=60) == 0
    tokens, logged = asyncio.run(state(migrated, 7, 8))
    assert tokens == ["EAA-crash-7", "EAA-crash-8"]
    assert sorted(logged) == sorted(("token_set", fingerprint(f"EAA-crash-{n}")) for n in (7, 8))


def test_a_lone_write_killed_at_the_event_lock_leaves_both_or_neither(migrated: Settings) -> None:
    kill_at_the_event_lock(migrated, lambda: start_writer(migrated.database_url, 7, 1))
    tokens, logged = asyncio.run(state(migrated, 7))
    assert (tokens, logged) in (([None], []), (["EAA-crash-7"], [("token_set", fingerprint("EAA-crash-7"))]))
    # The same write, not stopped: both.
    writer = start_writer(migrated.database_url, 7, 1)
    assert writer.wait(timeout=60) == 0
    tokens, logged = asyncio.run(state(migrated, 7))
    assert tokens == ["EAA-crash-7"] and logged[-1] == ("token_set", fingerprint("EAA-crash-7"))
