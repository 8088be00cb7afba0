"""The connections gauge: how many stored connections are fine and how many need the merchant to
reconnect, by provider; counted by one process at a time (service/leadership.py) every minute.

Today a connection's state is what the connections page says of it (routes/status.py, `attention`);
the vault's health model (issue 18) will feed this instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from service import keys, metrics
from service.leadership import run_periodically
from service.models import utcnow
from service.routes.status import attention
from service.vault import TokenRecord, TokenStore

COUNT_EVERY = 60.0  # seconds between counts
STATES = ("ok", "needs_reconnecting")


def count(records: Iterable[TokenRecord]) -> Counter[tuple[str, str]]:
    """(provider, state) -> connections: a store's token and each Page's token are connections."""
    now = utcnow()
    counted: Counter[tuple[str, str]] = Counter()
    for record in records:
        if record.key.startswith(keys.SHOPIFY_TOKEN_PREFIX):
            provider = keys.SHOPIFY
        elif record.key.startswith(keys.PAGE_TOKEN_PREFIX):
            provider = keys.FACEBOOK
        else:
            continue
        counted[provider, "ok" if attention(record, now) is None else "needs_reconnecting"] += 1
    return counted


async def count_and_set(store: TokenStore) -> None:
    counted = count(await store.list_tokens("token"))
    for provider in (keys.SHOPIFY, keys.FACEBOOK):
        for state in STATES:
            metrics.connections.labels(provider, state).set(counted[provider, state])


async def count_periodically(store: TokenStore, every: float = COUNT_EVERY) -> None:
    """Count at once, then every `every` seconds, in the one process that holds the leadership."""
    url = store.settings.database_url
    await run_periodically(url, "connection-count", lambda: count_and_set(store), every, first_after=0)
