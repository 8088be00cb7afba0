"""Delivering the outbox to EVENTS_WEBHOOK_URL: signed, in order per connection, at least once
(DESIGN.md, "The event log"; README, "Events").

One worker in `serve`, in one process at a time across every instance and worker (a Leadership named
`events-webhook`): it sends the first pending delivery of each connection whose time has come. A 2xx
answer deletes the delivery, and that connection's next one goes at once; anything else (a status, a
timeout, a refused connection) is tried again after a delay that doubles from about 2 s up to 10
minutes, with jitter, until 24 hours after the event: then it is marked failed (`salesbot events
--failed`, `salesbot events redeliver`). Time comes from an injectable clock, so tests drive a day of
retries in milliseconds. Nothing here runs in a merchant's request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import httpx

from service.events import SIGNATURE_HEADER, signature_header
from service.leadership import Leadership
from service.models import utcnow
from service.settings import Settings, origin
from service.vault import LOOK_ANYWAY_SECONDS, Wakeups

if TYPE_CHECKING:
    from service.vault import Delivery, TokenStore

logger = logging.getLogger("salesbot.events")
LEADERSHIP = "events-webhook"
FIRST_RETRY_SECONDS = 2.0
MAX_RETRY_SECONDS = 600.0
CONCURRENCY = 8  # deliveries in flight at once (each for another connection)
ROUND = 100  # deliveries read per round
CONTEND_EVERY = 5.0  # seconds between a follower's attempts to take the worker over
WAKE_POLL_SECONDS = 0.05  # SQLite: how often the idle worker asks PRAGMA data_version


def retry_delay(attempts: int, rng: Callable[[], float] = random.random) -> timedelta:
    """After `attempts` failed attempts: 2 s doubling each time, at most 10 minutes, less up to half at
    random (jitter, so a receiver coming back is not hit by every queue at the same instant)."""
    ceiling = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (max(attempts, 1) - 1))
    return timedelta(seconds=ceiling * (0.5 + rng() / 2))


def body_of(delivery: Delivery) -> bytes:
    return json.dumps(delivery.event.as_dict(), separators=(",", ":")).encode()


class Deliverer:
    def __init__(
        self,
        store: TokenStore,
        url: str,
        secret: str,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.url = url
        self._secret = secret
        self.client = client
        self.clock = clock
        self.rng = rng

    async def deliver_due(self, now: datetime | None = None) -> int:
        """Send everything due at `now` (default: the clock's), connection by connection in order, until
        nothing more is due; the number of attempts made."""
        attempted = 0
        gate = asyncio.Semaphore(CONCURRENCY)

        async def attempt(delivery: Delivery, at: datetime) -> bool:
            async with gate:
                return await self._attempt(delivery, at)

        while True:
            at = now or self.clock()
            due = await self.store.event_log.due(at, ROUND)
            if not due:
                return attempted
            attempted += len(due)
            results = await asyncio.gather(*(attempt(delivery, at) for delivery in due))
            if not any(results):
                return attempted  # every one failed: none is due again before its delay

    async def _attempt(self, delivery: Delivery, now: datetime) -> bool:
        body = body_of(delivery)
        headers = {
            "Content-Type": "application/json",
            # Signed at the wall clock's time (receivers compare with theirs), whatever the schedule's clock says.
            SIGNATURE_HEADER: signature_header(body, self._secret),
            "User-Agent": "salesbot-events",
        }
        try:
            response = await self.client.post(self.url, content=body, headers=headers)
            error = None if 200 <= response.status_code < 300 else f"http_{response.status_code}"
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as failure:  # refused, reset, unresolvable: the class says which
            error = type(failure).__name__
        log = self.store.event_log
        if error is None:
            await log.delivered(delivery)
            return True
        next_at = now + retry_delay(delivery.attempts + 1, self.rng)
        if now >= delivery.deadline_at:
            logger.warning("event %s not delivered for 24 hours (%s): marked failed", delivery.event.id, error)
            await log.give_up(delivery, now=now, next_at=next_at, error=error)
        else:
            await log.retry_later(delivery, now=now, next_at=next_at, error=error)
        return False

    async def run(self, *, contend_every: float = CONTEND_EVERY, poll: float = WAKE_POLL_SECONDS) -> None:
        """Until cancelled: deliver while this process holds the worker's leadership, waking when events
        commit anywhere or a retry comes due; otherwise try to take it over every `contend_every` s."""
        url = self.store.settings.database_url
        async with Leadership(url, LEADERSHIP) as lead, Wakeups(url, poll=poll) as wakeups:
            while True:
                try:
                    if not await lead.acquire():
                        await asyncio.sleep(contend_every)
                        continue
                    await self.deliver_due()
                    await wakeups.wait(await self._until_next())
                except Exception as failure:  # the database down, say: the next round tries again
                    name = type(failure).__name__
                    logger.warning("event delivery failed (%s); next try in %.0f s", name, contend_every)
                    await asyncio.sleep(contend_every)

    async def _until_next(self) -> float:
        next_due = await self.store.event_log.next_due()
        if next_due is None:
            return LOOK_ANYWAY_SECONDS
        return min(max((next_due - self.clock()).total_seconds(), 0.0), LOOK_ANYWAY_SECONDS)


@contextlib.asynccontextmanager
async def delivering(store: TokenStore, settings: Settings) -> AsyncIterator[Deliverer | None]:
    """The worker as a background task of the app's lifespan, when EVENTS_WEBHOOK_URL is set."""
    if settings.events_webhook_url is None or settings.events_webhook_secret is None:
        yield None
        return
    timeout = httpx.Timeout(settings.http_timeout_seconds)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        deliverer = Deliverer(store, settings.events_webhook_url, str(settings.events_webhook_secret), client)
        task = asyncio.create_task(deliverer.run())
        try:
            yield deliverer
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def points_at_service(url: str, host: str, port: int) -> bool:
    """Whether the webhook URL would reach this service itself, served on host:port (0.0.0.0 or :: is
    every address of this machine; loopback and private addresses of other ports are fine)."""
    target = origin(url)
    if target is None or target[2] != port:
        return False
    if host in ("0.0.0.0", "::", ""):
        return _is_local(target[1])
    return _addresses(target[1]) & _addresses(host) != set()


def _addresses(host: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}


def _is_local(host: str) -> bool:
    addresses = _addresses(host)
    local = _addresses(socket.gethostname()) | {"127.0.0.1", "::1"}
    return any(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses) or bool(
        addresses & local
    )
