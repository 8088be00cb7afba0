"""store.events(): a bot hears what another process committed, as it commits (LISTEN/NOTIFY on PostgreSQL,
PRAGMA data_version on SQLite), in order, resuming after the last seq it saw; filters hold."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from service.settings import Settings
from service.vault import TokenStore
from service.vault.event_log import LoggedEvent
from tests.command import ROOT
from tests.conftest import base_environ
from tests.events.helpers import fingerprint

# Another process, as a bot author writes one: the service's settings from the environment.
WRITER = """
import asyncio, os, sys, time
from service import TokenStore

async def main():
    async with TokenStore.open(os.environ["DATABASE_URL"]) as store:
        for n, key in enumerate(sys.argv[1:]):
            await store.store_token(key, f"token-{n}")
            print(time.time(), flush=True)  # committed
            await asyncio.sleep(0.05)

asyncio.run(main())
"""
WITHIN = 20.0  # a bound for a failing run only; the figure that matters is printed


def write_in_another_process(database_url: str, *keys: str) -> list[float]:
    """The keys stored by another process, one at a time; when each was committed (wall clock)."""
    environ = {**base_environ(DATABASE_URL=database_url), "PYTHONPATH": str(ROOT)}
    process = subprocess.run([sys.executable, "-c", WRITER, *keys], env=environ, capture_output=True, text=True)
    assert process.returncode == 0, process.stderr[-2000:]
    return [float(line) for line in process.stdout.split()]


async def collect(
    store: TokenStore, count: int, heard_at: list[float] | None = None, **filters: object
) -> list[LoggedEvent]:
    heard: list[LoggedEvent] = []
    async for event in store.events(await store.event_log.newest_seq(), **filters):  # type: ignore[arg-type]
        if heard_at is not None:
            heard_at.append(time.time())
        heard.append(event)
        if len(heard) == count:
            return heard
    return heard


async def test_a_bot_hears_another_process_commit(migrated: Settings) -> None:
    async with TokenStore.open(migrated) as store:
        heard_at: list[float] = []
        listening = asyncio.create_task(collect(store, 3, heard_at))
        keys = ["FACEBOOK_ACCESS_TOKEN_101", "SHOPIFY_ACCESS_TOKEN_acme", "FACEBOOK_ACCESS_TOKEN_101"]
        committed = await asyncio.to_thread(write_in_another_process, migrated.database_url, *keys)
        heard = await asyncio.wait_for(listening, WITHIN)
        lags = ", ".join(f"{1000 * (at - when):.1f}" for at, when in zip(heard_at, committed, strict=True))
        print(f"heard each event this many ms after the other process committed it: {lags}")
    assert [(e.kind, e.key) for e in heard] == [("token_set", key) for key in keys]
    assert [e.fingerprint for e in heard] == [fingerprint(f"token-{n}") for n in range(3)]
    assert heard[0].instance is not None and not heard[0].instance.endswith(f":{os.getpid()}")
    assert [e.seq for e in heard] == sorted(e.seq for e in heard)


async def test_a_listener_filters_and_resumes_after_the_seq_it_saw(migrated: Settings) -> None:
    async with TokenStore.open(migrated) as store:
        await store.store_token("FACEBOOK_ACCESS_TOKEN_101", "one")
        await store.store_token("FACEBOOK_ACCESS_TOKEN_202", "two")
        (first, second) = await store.event_log.list()
        page = asyncio.create_task(collect(store, 1, provider="facebook", subject="202"))
        await asyncio.to_thread(
            write_in_another_process, migrated.database_url, "FACEBOOK_ACCESS_TOKEN_101", "FACEBOOK_ACCESS_TOKEN_202"
        )
        (only,) = await asyncio.wait_for(page, WITHIN)
        assert (only.subject, only.fingerprint) == ("202", fingerprint("token-1"))
        # Resuming after `first` replays what came after it, in order, then goes on listening.
        resumed = []
        async for event in store.events(first.seq):
            resumed.append(event.id)
            if len(resumed) == 3:
                break
        assert resumed[0] == second.id and only.id in resumed
