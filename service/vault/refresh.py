"""ShopifyTokens: expiring Shopify tokens refreshed before they expire, once per shop (DESIGN.md, "Refresh").

A Shopify refresh token is single-use, so one holder at a time refreshes a shop: in this process the
callers share an asyncio lock; across processes the refresher first takes a lease on the row
(`refresh_lease_until`), which lasts no longer than one attempt can (the HTTP timeout plus a margin).
While another process holds it, a caller whose stored token is still valid gets that token at once;
only an expired one waits, at most until the lease runs out, then takes over or fails clearly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import httpx

from service import keys, metrics
from service.errors import NotConfigured, ProviderError, ProviderUnavailable, TokenRevoked
from service.logs import event
from service.models import utcnow
from service.providers import shopify
from service.settings import Settings
from service.vault.cache import REFRESH_MARGIN
from service.vault.events import REFRESHED
from service.vault.schema import TokenRecord, TokenWrite

if TYPE_CHECKING:
    from service.vault.store import TokenStore

logger = logging.getLogger("salesbot.refresh")
# Beyond the refresh call's own deadline: the time to write the new pair before the lease runs out.
LEASE_MARGIN = timedelta(seconds=2)
RETRY_AFTER = timedelta(seconds=30)  # after a failed attempt, the next one for that shop waits this long
WAIT_STEP_SECONDS = 0.05  # how often a caller waiting on another process's lease looks at the row


def _failed(domain: str, reason: str, outcome: str) -> None:
    metrics.refreshes.labels(outcome).inc()
    event(logger, "refresh.failed", level=logging.WARNING, shop=domain, reason=reason)


def needs_refresh(record: TokenRecord, now: datetime) -> bool:
    return (
        record.refresh_token is not None and record.expires_at is not None and record.expires_at - now < REFRESH_MARGIN
    )


def still_valid(record: TokenRecord, now: datetime) -> bool:
    return record.expires_at is None or record.expires_at > now


def _forced(record: TokenRecord, refused: str | None) -> bool:
    """Shopify refused the token that is still stored: it must be replaced, whatever its expiry says."""
    return refused is not None and record.value == refused


def _wanted(record: TokenRecord, now: datetime, refused: str | None) -> bool:
    return _forced(record, refused) or needs_refresh(record, now)


class ShopifyTokens:
    def __init__(self, store: TokenStore, settings: Settings, http: Callable[[], httpx.AsyncClient]) -> None:
        self.store = store
        self.settings = settings
        self._http = http  # the client refreshes go through, built on first use
        self.timeout = settings.http_timeout_seconds  # one refresh call, start to end
        self.lease = timedelta(seconds=self.timeout) + LEASE_MARGIN
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._retry_at: dict[str, datetime] = {}

    async def get(self, shop: str, *, refused: str | None = None) -> str | None:
        """A working access token for the shop (name or domain), or None when none is stored.

        refused: a token Shopify just answered 401 to. It is refreshed, unless the stored token is
        already another one (someone refreshed meanwhile), which is then handed back."""
        domain = shopify.normalize_shop(shop)
        key = keys.shopify_token_key(shopify.shop_key(domain))
        record = await self.store.get_record(key)
        now = utcnow()
        if record is None or not _wanted(record, now, refused):
            return None if record is None else record.value
        lock = self._locks[key]
        if lock.locked() and not _forced(record, refused) and still_valid(record, now):
            return record.value  # this process is refreshing it already; a valid token never waits
        async with lock:
            return await self._refresh(key, domain, refused)

    async def _refresh(self, key: str, domain: str, refused: str | None, *, waited: bool = False) -> str | None:
        now = utcnow()
        record = await self.store.get_record(key)
        if record is None or not _wanted(record, now, refused):
            return None if record is None else record.value
        forced = _forced(record, refused)
        if record.refresh_token is None:
            # Only a refused token gets here without a refresh token: a non-expiring token Shopify refuses.
            raise TokenRevoked(
                f"Shopify refused the token of {domain} and it cannot be refreshed: install the app again."
            )
        if self._retry_at.get(key, now) > now:
            return self._handed_out(record, now, forced, domain)
        client_id, client_secret = self._credentials()
        if not await self.store.take_refresh_lease(key, now=now, until=now + self.lease):
            # Another process is refreshing (or died holding the lease): a token still valid serves meanwhile.
            if not forced and still_valid(record, now):
                return record.value
            if waited:
                raise ProviderUnavailable(
                    f"The token of {domain} has expired and another process is refreshing it; try again shortly."
                )
            return await self._wait_for_holder(key, domain, record, refused)
        # Read again under the lease: another process may have refreshed between our read and our lease,
        # and its refresh token has spent the one we read.
        record = await self.store.get_record(key)
        if record is None or not _wanted(record, now, refused) or record.refresh_token is None:
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
            _failed(domain, "token_revoked", "revoked")
            # A pair written since we read (a process whose lease ran out, finishing late) spent ours.
            latest = await self.store.get_record(key)
            if latest is not None and latest.refresh_token != record.refresh_token and still_valid(latest, utcnow()):
                return latest.value
            raise
        except (ProviderError, ProviderUnavailable, TimeoutError) as error:
            await self.store.end_refresh_lease(key)
            _failed(domain, getattr(error, "code", "timeout"), "failed")
            self._retry_at[key] = now + RETRY_AFTER
            return self._handed_out(record, now, _forced(record, refused), domain)
        self._retry_at.pop(key, None)
        await self.store.store_tokens(
            [
                TokenWrite(
                    key,
                    fresh.access_token,
                    "token",
                    {
                        "refresh_token": fresh.refresh_token,
                        "expires_at": fresh.expires_at,
                        "refresh_expires_at": fresh.refresh_expires_at,
                        "scopes": ",".join(fresh.scopes) or record.scopes,
                        "refresh_lease_until": None,
                    },
                )
            ],
            event=REFRESHED,
        )
        metrics.refreshes.labels("refreshed").inc()
        event(logger, "refresh.done", shop=domain)
        return fresh.access_token

    def _handed_out(self, record: TokenRecord, now: datetime, forced: bool, domain: str) -> str:
        """The stored token after a refresh that could not happen: only while it still works."""
        if forced:
            raise ProviderUnavailable(
                f"Shopify refused the token of {domain} and could not refresh it just now; try again shortly."
            )
        if not still_valid(record, now):
            raise ProviderUnavailable(
                f"The token of {domain} has expired and Shopify could not refresh it just now; try again shortly."
            )
        return record.value or ""

    async def _wait_for_holder(self, key: str, domain: str, seen: TokenRecord, refused: str | None) -> str | None:
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
        return await self._refresh(key, domain, refused, waited=True)

    def _credentials(self) -> tuple[str, str]:
        if not self.settings.shopify_api_key:
            raise NotConfigured("SHOPIFY_API_KEY is not set, so Shopify tokens cannot be refreshed.")
        if self.settings.shopify_api_secret is None:
            raise NotConfigured("SHOPIFY_API_SECRET is not set, so Shopify tokens cannot be refreshed.")
        return self.settings.shopify_api_key, str(self.settings.shopify_api_secret)
