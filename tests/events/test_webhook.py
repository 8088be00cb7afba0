"""Delivering events to a real local HTTP server that fails, then recovers: nothing lost, in order per
connection, backed off as promised, given up after 24 hours and sent again on request. Time is the
deliverer's injected clock, so an hour (or a day) of retries takes milliseconds."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import httpx

from service.events import verify_signature
from service.events.webhook import Deliverer
from service.models import utcnow
from service.vault import TokenStore
from service.vault.events import Event
from service.vault.planner import Plan
from tests.events.helpers import WEBHOOK_SECRET, Receiver, raw_deliveries, receiver

SHOP = "SHOPIFY_ACCESS_TOKEN_acme"
PAGE = "FACEBOOK_ACCESS_TOKEN_101"


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@asynccontextmanager
async def deliverer(store: TokenStore, endpoint: Receiver, clock: Clock) -> AsyncIterator[Deliverer]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield Deliverer(store, endpoint.url, WEBHOOK_SECRET, client, clock=clock)


async def some_events(store: TokenStore) -> list[str]:
    """Five events of two connections, interleaved; their ids in commit order."""
    for key, value in [(SHOP, "a1"), (PAGE, "p1"), (SHOP, "a2"), (SHOP, "a3"), (PAGE, "p2")]:
        await store.store_token(key, value)
    return [event.id for event in await store.event_log.list()]


def by_subject(events: list[dict]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for event in events:
        found[event["subject"]].append(event["id"])
    return dict(found)


async def run_until(store: TokenStore, sender: Deliverer, clock: Clock, end: datetime) -> list[datetime]:
    """Deliver at each moment something comes due, until `end`; the moments."""
    moments = []
    while True:
        await sender.deliver_due()
        due = await store.event_log.next_due()
        if due is None or due > end:
            return moments
        clock.now = max(clock.now, due)
        moments.append(clock.now)


async def test_a_receiver_down_for_an_hour_gets_everything_in_order_when_it_recovers(store: TokenStore) -> None:
    ids = await some_events(store)
    expected = by_subject([event.as_dict() for event in await store.event_log.list()])
    clock = Clock(utcnow())
    start = clock.now
    with receiver(status=503) as endpoint:
        async with deliverer(store, endpoint, clock) as sender:
            await run_until(store, sender, clock, start + timedelta(hours=1))
            assert endpoint.delivered() == []
            attempts: dict[str, list[str]] = defaultdict(list)
            for request in endpoint.refused():
                attempts[request.event["subject"]].append(request.event["id"])
            # Only each connection's first event was tried: the rest waited behind it, in order.
            assert {subject: set(tried) for subject, tried in attempts.items()} == {
                subject: {queue[0]} for subject, queue in expected.items()
            }
            heads = [row for row in await raw_deliveries(store) if row["attempts"]]
            assert len(heads) == 2 and all(row["last_error"] == "http_503" for row in heads)

            endpoint.status = 200  # back after an hour: each queue goes at its next retry, whole
            while (due := await store.event_log.next_due()) is not None:
                clock.now = max(clock.now, due)
                before = len(endpoint.delivered())
                await sender.deliver_due()
                sent = by_subject(endpoint.delivered()[before:])
                assert sent and all(sent[subject] == expected[subject] for subject in sent)
            assert clock.now - start < timedelta(hours=1, minutes=10)  # within one backoff of the recovery
    assert by_subject(endpoint.delivered()) == expected
    assert sorted(event["id"] for event in endpoint.delivered()) == sorted(ids)  # each once
    assert await raw_deliveries(store) == []
    for request in endpoint.requests:
        assert verify_signature(request.body, request.headers["Salesbot-Signature"], WEBHOOK_SECRET)
        assert request.headers["Content-Type"] == "application/json"


async def test_retries_start_within_two_seconds_double_and_stay_within_ten_minutes(store: TokenStore) -> None:
    await store.store_token(SHOP, "a1")
    clock = Clock(utcnow())
    with receiver(status=500) as endpoint:
        async with deliverer(store, endpoint, clock) as sender:
            moments = [clock.now, *await run_until(store, sender, clock, clock.now + timedelta(hours=3))]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(moments)]
    assert len(endpoint.requests) == len(moments)
    assert 1.0 <= gaps[0] <= 2.0  # the first retry within a couple of seconds
    for n, gap in enumerate(gaps, start=1):
        ceiling = min(600.0, 2.0 * 2 ** (n - 1))
        assert ceiling / 2 <= gap <= ceiling, (n, gap)  # doubling, with jitter of up to half
    assert max(gaps) > 300  # it reached the cap within three hours...
    assert len(gaps) < 3 * 3600 / 300  # ...and stayed there


async def test_after_24_hours_a_delivery_is_failed_listed_and_sent_again_on_request(store: TokenStore) -> None:
    await store.store_token(SHOP, "a1")
    await store.store_token(SHOP, "a2")
    first, second = await store.event_log.list()
    clock = Clock(utcnow())
    # A third event of the same store, written 23 hours later: it has a day of its own.
    late = clock.now + timedelta(hours=23)
    await store.write(store.recorder.record(Plan(), [Event("token_set", key=SHOP)], now=late))
    *_, third = await store.event_log.list()
    with receiver(status=500) as endpoint:
        async with deliverer(store, endpoint, clock) as sender:
            await run_until(store, sender, clock, first.at + timedelta(hours=24, minutes=20))
            failed = await store.event_log.failed()
            # The first, and the second that waited its whole day behind it, are given up; the third waits.
            assert [delivery.event.id for delivery in failed] == [first.id, second.id]
            assert {delivery.last_error for delivery in failed} == {"http_500"}
            (pending,) = [row for row in await raw_deliveries(store) if row["status"] == "pending"]
            assert pending["event_id"] == third.id
            assert pending["attempts"] > 5  # it keeps the backoff reached: no burst at a receiver still down
            assert endpoint.delivered() == []

            endpoint.status = 200
            queued = await store.event_log.redeliver(all_failed=True, now=clock.now)
            assert sorted(queued) == sorted([first.id, second.id])
            await sender.deliver_due()
            clock.now = max(clock.now, await store.event_log.next_due())  # type: ignore[type-var]
            await sender.deliver_due()
    assert [event["id"] for event in endpoint.delivered()] == [first.id, second.id, third.id]
    assert await store.event_log.failed() == []


async def test_an_unreachable_receiver_is_retried_like_an_error(store: TokenStore) -> None:
    await store.store_token(SHOP, "a1")
    clock = Clock(utcnow())
    with receiver() as endpoint:
        closed = endpoint.url
    async with httpx.AsyncClient(timeout=2.0) as client:
        sender = Deliverer(store, closed, WEBHOOK_SECRET, client, clock=clock)
        assert await sender.deliver_due() == 1
    (row,) = await raw_deliveries(store)
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 1, "ConnectError")
