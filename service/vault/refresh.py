"""ShopifyTokens: expiring Shopify tokens refreshed before they expire, once per shop (DESIGN.md, "Refresh").

A Shopify refresh token is single-use, so one holder at a time refreshes a shop: in this process the
callers share an asyncio lock; across processes the refresher first takes a lease on the row
(`refresh_lease_until`), which lasts no longer than one attempt can (the HTTP timeout plus a margin).
While another process holds it, a caller whose stored token is still valid gets that token at once;
only an expired one waits, at most until the lease runs out, then takes over or fails clearly.

What a refresh comes to is written to the row, for every process (DESIGN.md, "Refresh"): a new pair
(`_store_pair`), a failure and the cooldown before the next try (`_failed`: 30 s, doubling to 10 min),
or `invalid_grant`, which makes the store `needs_reconnect` and is never retried (`_refused`). Each is
an event in the same transaction (`refreshed`, and `recovered` after failures; `refresh_failed`;
`health_changed`), by whoever refreshed (`by`), a count by outcome (service/metrics.py) and a log line.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import httpx

from service import keys, metrics
from service.errors import NotConfigured, ProviderError, ProviderUnavailable, TokenRevoked
from service.logs import event
from service.models import utcnow
from service.providers import shopify
from service.settings import Settings
from service.vault import health, rows
from service.vault.cache import REFRESH_MARGIN
from service.vault.events import Actor
from service.vault.schema import TokenRecord, TokenWrite

if TYPE_CHECKING:
    from service.vault.verdicts import Verdicts

logger = logging.getLogger("salesbot.refresh")
# Beyond the refresh call's own deadline: the time to write the new pair before the lease runs out.
LEASE_MARGIN = timedelta(seconds=2)
# After a failed attempt (Shopify down, 5xx, no answer in time) no process tries that shop again for
# this long, doubling with each failure in a row up to COOLDOWN_MAX.
COOLDOWN_FIRST = timedelta(seconds=30)
COOLDOWN_MAX = timedelta(minutes=10)
WAIT_STEP_SECONDS = 0.05  # how often a caller waiting on another process's lease looks at the row


def cooldown(failures: int) -> timedelta:
    """The wait after `failures` failed refreshes in a row."""
    if failures < 1:
        return timedelta(0)
    return min(COOLDOWN_FIRST * 2 ** min(failures - 1, 16), COOLDOWN_MAX)


def needs_refresh(record: TokenRecord, now: datetime, margin: timedelta = REFRESH_MARGIN) -> bool:
    return record.refresh_token is not None and record.expires_at is not None and record.expires_at - now < margin


# What a refresh came to, as /metrics counts it (salesbot_token_refreshes_total{outcome}): a new pair;
# no answer or a 5xx (the cooldown begins); invalid_grant (the store needs reconnecting); not tried,
# because the shop's cooldown was on.
REFRESHED, FAILED, REFUSED, COOLDOWN = "refreshed", "failed", "refused", "cooldown"
REFUSED_REASON = "refresh_refused"  # vault/health.py's reason for invalid_grant


def _said_failed(domain: str, reason: str, outcome: str) -> None:
    """A refresh that did not give a new token: counted (service/metrics.py) and logged (`refresh.failed`)."""
    metrics.refreshes.labels(outcome).inc()
    event(logger, "refresh.failed", level=logging.WARNING, shop=domain, reason=reason)


def still_valid(record: TokenRecord, now: datetime) -> bool:
    return record.expires_at is None or record.expires_at > now


def _forced(record: TokenRecord, refused: str | None) -> bool:
    """Shopify refused the token that is still stored: it must be replaced, whatever its expiry says."""
    return refused is not None and record.value == refused


def _wanted(record: TokenRecord, now: datetime, refused: str | None, margin: timedelta = REFRESH_MARGIN) -> bool:
    return _forced(record, refused) or needs_refresh(record, now, margin)


class RefreshStore(Protocol):
    """What a refresh needs of the store (vault/store.py): a row, its lease, the refreshed pair stored
    only over the token it replaces, and the verdicts a failure writes. Named here, not imported, so the
    store imports this module and this module never imports the store."""

    verdicts: Verdicts

    async def get_record(self, key: str) -> TokenRecord | None: ...

    async def store_refreshed(self, write: TokenWrite, *, expected: str, by: Actor | None = None) -> bool: ...

    async def take_refresh_lease(self, key: str, *, now: datetime, until: datetime) -> bool: ...

    async def end_refresh_lease(self, key: str) -> None: ...


class ShopifyTokens:
    def __init__(self, store: RefreshStore, settings: Settings, http: Callable[[], httpx.AsyncClient]) -> None:
        self.store = store
        self.settings = settings
        self._http = http  # the client refreshes go through, built on first use
        self.timeout = settings.http_timeout_seconds  # one refresh call, start to end
        self.lease = timedelta(seconds=self.timeout) + LEASE_MARGIN
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def get(
        self, shop: str, *, refused: str | None = None, margin: timedelta = REFRESH_MARGIN, by: Actor | None = None
    ) -> str | None:
        """A working access token for the shop (name or domain), or None when none is stored.

        refused: a token Shopify just answered 401 to. It is refreshed, unless the stored token is
        already another one (someone refreshed meanwhile), which is then handed back. margin: refresh
        when the token expires within this (the sweep asks further ahead than a bot does). by: who the
        events of what the refresh comes to are by (default: the store's actor; the sweep says `sweep`)."""
        domain = shopify.normalize_shop(shop)
        key = keys.shopify_token_key(shopify.shop_key(domain))
        record = await self.store.get_record(key)
        now = utcnow()
        if record is None or not _wanted(record, now, refused, margin):
            return None if record is None else record.value
        lock = self._locks[key]
        if lock.locked() and not _forced(record, refused) and still_valid(record, now):
            return record.value  # this process is refreshing it already; a valid token never waits
        async with lock:
            return await self._refresh(key, domain, refused, margin, by)

    async def _refresh(
        self, key: str, domain: str, refused: str | None, margin: timedelta, by: Actor | None, *, waited: bool = False
    ) -> str | None:
        now = utcnow()
        record = await self.store.get_record(key)
        if record is None or not _wanted(record, now, refused, margin):
            return None if record is None else record.value
        forced = _forced(record, refused)
        if record.refresh_token is None:
            # Only a refused token gets here without a refresh token: a non-expiring token Shopify refuses.
            await self.store.verdicts.mark_dead(key, health.verdict("token_refused"), token=record.value, by=by)
            raise TokenRevoked(
                f"Shopify refused the token of {domain} and it cannot be refreshed: install the app again.",
                reason="token_refused",
            )
        dead = health.of_record(record, now)
        if dead.state == health.NEEDS_RECONNECT:
            # Shopify refused this refresh token before (invalid_grant), or it has ended: only a new
            # install mends that, so Shopify is not asked again.
            raise TokenRevoked(f"{dead.sentence(domain)} Install the app again.", reason=dead.reason)
        if record.refresh_retry_at is not None and record.refresh_retry_at > now:
            metrics.refreshes.labels(COOLDOWN).inc()  # not tried: the shop's cooldown after a failure is on
            return self._handed_out(record, now, forced, domain, record.refresh_retry_at)
        client_id, client_secret = self._credentials()
        if not await self.store.take_refresh_lease(key, now=now, until=now + self.lease):
            # Another process is refreshing (or died holding the lease): a token still valid serves meanwhile.
            if not forced and still_valid(record, now):
                return record.value
            if waited:
                lease = record.refresh_lease_until
                wait = max(1, math.ceil((lease - now).total_seconds())) if lease is not None else 1
                raise ProviderUnavailable(
                    f"The token of {domain} has expired and another process is refreshing it; try again in {wait} s.",
                    retry_after=wait,
                )
            return await self._wait_for_holder(key, domain, record, refused, margin, by)
        # Read again under the lease: another process may have refreshed between our read and our lease,
        # and its refresh token has spent the one we read.
        record = await self.store.get_record(key)
        if record is None or not _wanted(record, now, refused, margin) or record.refresh_token is None:
            await self.store.end_refresh_lease(key)
            return None if record is None else record.value
        try:
            # A deadline for the whole call, not per phase: the lease must outlast it.
            async with asyncio.timeout(self.timeout):
                fresh = await shopify.refresh_access_token(
                    self._http(),
                    admin_base=shopify.admin_base_url(self.settings.shopify_admin_base_url, domain),
                    client_id=client_id,
                    client_secret=client_secret,
                    refresh_token=record.refresh_token,
                    now=now,
                )
        except TokenRevoked:
            await self.store.end_refresh_lease(key)
            # A pair written since we read (a process whose lease ran out, finishing late) spent ours.
            latest = await self.store.get_record(key)
            if latest is not None and latest.refresh_token != record.refresh_token and still_valid(latest, utcnow()):
                return latest.value
            await self._refused(key, record, by)
            _said_failed(domain, REFUSED_REASON, REFUSED)
            raise TokenRevoked(
                f"Shopify refused the refresh token of {domain} (invalid_grant): install the app again.",
                reason="refresh_refused",
            ) from None
        except (ProviderError, ProviderUnavailable, TimeoutError) as error:
            reason = getattr(error, "code", "timeout")
            retry_at = await self._failed(key, record, now, reason, by)
            _said_failed(domain, reason, FAILED)
            return self._handed_out(record, now, _forced(record, refused), domain, retry_at)
        return await self._store_pair(key, domain, record, fresh, by)

    async def _store_pair(
        self, key: str, domain: str, record: TokenRecord, fresh: shopify.ShopifyToken, by: Actor | None
    ) -> str | None:
        """A refresh that worked: the new pair in one write, which also ends the lease and clears the row's
        failures and verdict (a new token value starts clean: vault/sql.py, upsert), with its `refreshed`
        event (and `recovered`, after failures: vault/store.py, store_refreshed). Written only while the
        row still holds the token it replaces: a holder whose lease ran out while Shopify answered it
        (Shopify keeps a used refresh token usable for a while, so both got pairs) leaves the pair stored
        meanwhile in place, and hands that out."""
        write = rows.shopify_refreshed(key, fresh, scopes_before=record.scopes)
        expected = await self.store.verdicts.ciphertext_holding(key, record.value or "")
        if expected is not None and await self.store.store_refreshed(write, expected=expected, by=by):
            metrics.refreshes.labels(REFRESHED).inc()
            event(logger, "refresh.done", shop=domain)
            return fresh.access_token
        latest = await self.store.get_record(key)
        return None if latest is None else latest.value

    async def _failed(self, key: str, record: TokenRecord, now: datetime, reason: str, by: Actor | None) -> datetime:
        """A refresh that could not happen (no answer, 5xx): every process waits out the cooldown, and a
        `refresh_failed` event says so, with the health that leaves the store in (vault/health.py)."""
        failures = (record.refresh_failures or 0) + 1
        retry_at = now + cooldown(failures)
        left = health.of_record(record, now)
        await self.store.verdicts.refresh_failed(
            key, failures=failures, retry_at=retry_at, reason=reason, health=left, by=by
        )
        return retry_at

    async def _refused(self, key: str, record: TokenRecord, by: Actor | None) -> None:
        """Shopify answered invalid_grant: the store needs reconnecting, now, for everyone (a health change)."""
        verdict = health.verdict(REFUSED_REASON)
        await self.store.verdicts.record(key, verdict, token=record.value, checked=True, by=by)

    def _handed_out(self, record: TokenRecord, now: datetime, forced: bool, domain: str, retry_at: datetime) -> str:
        """The stored token after a refresh that could not happen: only while it still works. Otherwise
        a clear error saying when a new try can help."""
        wait = max(1, math.ceil((retry_at - now).total_seconds()))
        if forced:
            raise ProviderUnavailable(
                f"Shopify refused the token of {domain} and could not refresh it just now; try again in {wait} s.",
                retry_after=wait,
            )
        if not still_valid(record, now):
            raise ProviderUnavailable(
                f"The token of {domain} has expired and Shopify could not refresh it just now; try again in {wait} s.",
                retry_after=wait,
            )
        return record.value or ""

    async def _wait_for_holder(
        self, key: str, domain: str, seen: TokenRecord, refused: str | None, margin: timedelta, by: Actor | None
    ) -> str | None:
        """Our token is expired (or refused) and another process holds the lease: wait for its new token,
        at most until its lease runs out (never past our own lease length), then try once ourselves."""
        deadline = utcnow() + self.lease
        if seen.refresh_lease_until is not None:
            deadline = min(deadline, seen.refresh_lease_until)
        while True:
            await asyncio.sleep(WAIT_STEP_SECONDS)
            record = await self.store.get_record(key)
            if record is None:
                return None  # deleted meanwhile (uninstalled)
            if record.value != seen.value:
                return record.value  # the holder's new token
            lease = record.refresh_lease_until
            now = utcnow()
            if lease is None or lease < now or now >= deadline:
                break  # the holder gave up, or died: its lease has run out
        return await self._refresh(key, domain, refused, margin, by, waited=True)

    def _credentials(self) -> tuple[str, str]:
        if not self.settings.shopify_api_key:
            raise NotConfigured("SHOPIFY_API_KEY is not set, so Shopify tokens cannot be refreshed.")
        if self.settings.shopify_api_secret is None:
            raise NotConfigured("SHOPIFY_API_SECRET is not set, so Shopify tokens cannot be refreshed.")
        return self.settings.shopify_api_key, str(self.settings.shopify_api_secret)
