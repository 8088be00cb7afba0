"""A writer killed exactly between its token statement and its event leaves neither: the test holds the
PostgreSQL lock that the event's insert takes (vault/events.py), so the writer stops right there."""

from __future__ import annotations

import asyncio
import signal
import time

import asyncpg
import pytest

from service.settings import Settings
from service.vault import TokenStore
from tests.events.helpers import fingerprint
from tests.reliability.test_event_crash import start_writer

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


def test_a_writer_killed_between_its_token_and_its_event_leaves_neither(migrated: Settings) -> None:
    async def scenario() -> None:
        holder = await asyncpg.connect(migrated.database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await holder.execute(LOCK)
            writer = start_writer(migrated.database_url, 7, 1)
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

    async def state() -> tuple[str | None, list]:
        async with TokenStore.open(migrated) as store:
            return await store.get_token("FACEBOOK_ACCESS_TOKEN_7"), await store.event_log.list()

    assert asyncio.run(state()) == (None, [])
    # The same write, not stopped: both.
    writer = start_writer(migrated.database_url, 7, 1)
    assert writer.wait(timeout=60) == 0
    token, logged = asyncio.run(state())
    assert token == "EAA-crash-7" and [(e.kind, e.fingerprint) for e in logged] == [
        ("token_set", fingerprint("EAA-crash-7"))
    ]
