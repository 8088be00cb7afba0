"""What /metrics reports, in Prometheus's text format (prometheus_client), and how several workers add up
(DESIGN.md, "Operating it").

Under `salesbot serve` every worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR (a folder
serve makes, and removes on exit), and a scrape reads them all, so any worker answers for every worker.
Elsewhere (tests, scripts, a bot) the samples stay in the process. No label ever holds a raw path, a
shop or a token: routes are their templates, providers and outcomes are short fixed words.

Not Starlette: provider modules record their calls here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SLOW = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

http_requests = Counter(
    "salesbot_http_requests",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
)
http_seconds = Histogram("salesbot_http_request_seconds", "Time to answer, by route template", ["route"], buckets=SLOW)
oauth_outcomes = Counter(
    "salesbot_oauth_outcomes",
    "OAuth callbacks by provider and outcome: connected, or the error code",
    ["provider", "outcome"],
)
# refreshed, failed (the cooldown began), refused (invalid_grant), cooldown (not tried: vault/refresh.py)
refreshes = Counter("salesbot_token_refreshes", "Shopify token refreshes by outcome", ["outcome"])
provider_calls = Counter(
    "salesbot_provider_calls",
    "Calls to Shopify and Facebook by provider and HTTP status (or failure)",
    ["provider", "status"],
)
provider_seconds = Histogram(
    "salesbot_provider_call_seconds", "Time of calls to Shopify and Facebook, by provider", ["provider"], buckets=SLOW
)
cache_lookups = Counter("salesbot_cache_lookups", "The vault's token cache: hits and misses", ["result"])
write_batch_size = Histogram(
    "salesbot_write_batch_size",
    "Writes committed together in one transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
database_seconds = Histogram(
    "salesbot_database_seconds", "Time of the vault's database work: a write batch, a read", ["operation"], buckets=FAST
)
# Set by the one process that leads the count (service/health_gauge.py); mostrecent: the leader's last value.
connections = Gauge(
    "salesbot_connections", "Stored connections by health state", ["provider", "state"], multiprocess_mode="mostrecent"
)


def observe_write_batch(size: int, seconds: float) -> None:
    write_batch_size.observe(size)
    database_seconds.labels("write").observe(seconds)


def observe_read(size: int, seconds: float) -> None:
    database_seconds.labels("read").observe(seconds)


@contextmanager
def provider_call(provider: str) -> Iterator[list[str]]:
    """Times one provider call; the caller puts the status in the list it gets (left empty: a failure)."""
    outcome: list[str] = []
    began = time.perf_counter()
    try:
        yield outcome
    finally:
        provider_seconds.labels(provider).observe(time.perf_counter() - began)
        provider_calls.labels(provider, outcome[0] if outcome else "unreachable").inc()


class CacheCounts:
    """Hands the vault's hit and miss counts (plain ints it keeps anyway) to the counters, as deltas, once
    a request is done: counting each lookup here would cost the read path more than the read."""

    def __init__(self) -> None:
        self._hits = self._misses = 0

    def flush(self, stats: dict[str, int]) -> None:
        hits, misses = stats["hits"], stats["misses"]
        if hits > self._hits:
            cache_lookups.labels("hit").inc(hits - self._hits)
        if misses > self._misses:
            cache_lookups.labels("miss").inc(misses - self._misses)
        self._hits, self._misses = max(hits, self._hits), max(misses, self._misses)


def render() -> bytes:
    """Every metric in the text format: all workers' when several share PROMETHEUS_MULTIPROC_DIR."""
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)


def process_exited(pid: int) -> None:
    """A worker going away: its live gauges no longer count (multiprocess mode only)."""
    if os.environ.get(MULTIPROC_DIR):
        multiprocess.mark_process_dead(pid)
