"""The connections gauge: how many stored connections are in each health state (vault/health.py: ok,
expiring_soon, needs_reconnect), by provider; counted by one process at a time (service/leadership.py)
every minute. A store's token and each Page's token are connections; a Facebook login is not (the bot
answers with its Pages' tokens), and what a provider removed is no longer stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from service import keys, metrics
from service.leadership import run_periodically
from service.models import utcnow
from service.vault import TokenRecord, TokenStore, health

COUNT_EVERY = 60.0  # seconds between counts
STATES = (health.OK, health.EXPIRING_SOON, health.NEEDS_RECONNECT)


def count(records: Iterable[TokenRecord]) -> Counter[tuple[str, str]]:
    """(provider, health state) -> connections."""
    now = utcnow()
    counted: Counter[tuple[str, str]] = Counter()
    for record in records:
        kind = health.kind_of(record.key)
        if kind == health.SHOP:
            provider = keys.SHOPIFY
        elif kind == health.PAGE:
            provider = keys.FACEBOOK
        else:
            continue
        counted[provider, health.of_record(record, now).state] += 1
    return counted


async def count_and_set(store: TokenStore) -> None:
    # A page of rows at a time: at 100,000 connections, counting a whole listing at once held the event
    # loop for a third of a second and a hundred megabytes (scripts/bench_sweep.py found it).
    counted: Counter[tuple[str, str]] = Counter()
    async for page in store.listing_pages("token"):
        counted.update(count(page))
    for provider in (keys.SHOPIFY, keys.FACEBOOK):
        for state in STATES:
            metrics.connections.labels(provider, state).set(counted[provider, state])


async def count_periodically(store: TokenStore, every: float = COUNT_EVERY) -> None:
    """Count at once, then every `every` seconds, in the one process that holds the leadership."""
    url = store.settings.database_url
    await run_periodically(url, "connection-count", lambda: count_and_set(store), every, first_after=0)
