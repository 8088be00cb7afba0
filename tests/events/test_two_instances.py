"""Two `salesbot serve` instances on one PostgreSQL database, one webhook receiver: each event is attempted
once (one worker across the instances), in order per connection; when one instance stops, the other
delivers what comes next."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import asyncpg
import pytest

from service.leadership import advisory_key
from service.settings import Settings
from service.vault import TokenStore
from tests.conftest import base_environ
from tests.demo_server import salesbot_server
from tests.events.helpers import WEBHOOK_SECRET, Receiver, receiver
from tests.events.test_webhook import by_subject

ONLY_BACKENDS = ["postgres"]
pytestmark = pytest.mark.postgres  # without TEST_DATABASE_URL these are deselected, as every PostgreSQL case
KEYS = ["SHOPIFY_ACCESS_TOKEN_north", "SHOPIFY_ACCESS_TOKEN_south", "FACEBOOK_ACCESS_TOKEN_101", "CUSTOM_KEY"]


async def write_events(settings: Settings, rounds: int) -> dict[str, list[str]]:
    async with TokenStore.open(settings) as store:
        after = await store.event_log.newest_seq()
        writes = [store.store_token(key, f"value-{n}-{key}") for n in range(rounds) for key in KEYS]
        for write in writes:  # one at a time: each its own transaction, in this order
            await write
        return by_subject([event.as_dict() for event in await store.event_log.list(after=after)])


def wait_for(endpoint: Receiver, count: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while len(endpoint.delivered()) < count:
        assert time.monotonic() < deadline, f"{len(endpoint.delivered())} of {count} delivered"
        time.sleep(0.02)


async def holders(url: str) -> int:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        key = advisory_key("events-webhook")
        return await connection.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND ((classid::bigint << 32) | objid::bigint) = $1",
            key,
        )
    finally:
        await connection.close()


def wait_for_holder(url: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while asyncio.run(holders(url)) != 1:
        assert time.monotonic() < deadline, "no instance took the webhook worker"
        time.sleep(0.05)


def test_two_instances_attempt_each_event_once_in_order(migrated: Settings) -> None:
    with receiver() as endpoint:
        environ = base_environ(
            DATABASE_URL=migrated.database_url, EVENTS_WEBHOOK_URL=endpoint.url, EVENTS_WEBHOOK_SECRET=WEBHOOK_SECRET
        )
        with salesbot_server("serve", env=environ), salesbot_server("serve", env=environ):
            expected = asyncio.run(write_events(migrated, rounds=10))
            wait_for(endpoint, 40)
            assert asyncio.run(holders(migrated.database_url)) == 1  # one worker across both instances
        # Both stopped: nothing more can be sent; every attempt there was is in `endpoint.requests`.
        attempts = Counter(request.event["id"] for request in endpoint.requests)
        assert set(attempts.values()) == {1} and len(attempts) == 40
        assert by_subject(endpoint.delivered()) == expected


def test_when_the_delivering_instance_stops_the_other_takes_over(migrated: Settings) -> None:
    with receiver() as endpoint:
        environ = base_environ(
            DATABASE_URL=migrated.database_url, EVENTS_WEBHOOK_URL=endpoint.url, EVENTS_WEBHOOK_SECRET=WEBHOOK_SECRET
        )
        with contextlib.ExitStack() as first:
            first.enter_context(salesbot_server("serve", env=environ))
            wait_for_holder(migrated.database_url)  # alone, it holds the worker
            with salesbot_server("serve", env=environ):
                first.close()  # the worker stops; the second takes over at its next try
                expected = asyncio.run(write_events(migrated, rounds=2))
                wait_for(endpoint, 8)
        assert by_subject(endpoint.delivered()) == expected
