"""Handing out Shopify tokens that work: expiring offline tokens are refreshed before they expire.

A Shopify refresh token is single-use: two processes refreshing the same shop at once would leave
one of them with a dead pair. So a refresh is done once per shop at a time:
- in-process, callers for one shop share one asyncio lock and the second finds the fresh token;
- across processes, the refresher first takes a lease on the row (`refresh_lease_until`) inside a
  write transaction; another process that finds the lease held waits for the new pair to appear.
The new access and refresh tokens, their expiries and the scopes are written in one statement.

A refresh that fails for a passing reason (provider down, 500) leaves the old token in place: while
it is still valid it is handed out, and the next attempt for that shop waits RETRY_AFTER, so a
failing provider is not hit in a hot loop.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime, timedelta

import httpx

from service import keys
from service.errors import NotConfigured, ProviderError, ProviderUnavailable, TokenRevoked
from service.models import utcnow
from service.providers import shopify
from service.settings import Settings
from service.vault import TokenRecord, TokenStore, TokenWrite
from service.vault.store import REFRESH_MARGIN

LEASE = timedelta(seconds=30)  # longer than one token call with its timeout
RETRY_AFTER = timedelta(seconds=30)
WAIT_STEP_SECONDS = 0.05


def needs_refresh(record: TokenRecord, now: datetime) -> bool:
    return (
        record.refresh_token is not None and record.expires_at is not None and record.expires_at - now < REFRESH_MARGIN
    )


class ShopifyTokens:
    def __init__(self, store: TokenStore, settings: Settings, http: httpx.AsyncClient) -> None:
        self.store = store
        self.settings = settings
        self.http = http
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._retry_at: dict[str, datetime] = {}

    async def get(self, shop: str) -> str | None:
        """A working access token for the shop (name or domain), or None when none is stored."""
        domain = shopify.normalize_shop(shop)
        key = keys.shopify_token_key(shopify.shop_key(domain))
        record = await self.store.get_record(key)
        if record is None or not needs_refresh(record, utcnow()):
            return None if record is None else record.value
        async with self._locks[key]:
            return await self._refresh(key, domain)

    async def _refresh(self, key: str, domain: str) -> str | None:
        now = utcnow()
        record = await self.store.get_record(key)
        if record is None or not needs_refresh(record, now):
            return None if record is None else record.value
        if self._retry_at.get(key, now) > now:
            return self._still_valid(record, now)
        if not await self._take_lease(key, now):
            return await self._wait_for_other_process(key)
        # Read again under the lease: another instance may have refreshed between our first read and
        # our lease, and its refresh token has spent the one we read.
        record = await self.store.get_record(key)
        if record is None or not needs_refresh(record, now):
            await self._release_lease(key)
            return None if record is None else record.value
        try:
            fresh = await shopify.refresh_access_token(
                self.http,
                admin_base=shopify.admin_base_url(self.settings.shopify_admin_base_url, domain),
                client_id=self._client_id(),
                client_secret=self._client_secret(),
                refresh_token=record.refresh_token or "",
                now=now,
            )
        except TokenRevoked:
            await self._release_lease(key)
            raise
        except (ProviderError, ProviderUnavailable):
            await self._release_lease(key)
            self._retry_at[key] = now + RETRY_AFTER
            return self._still_valid(record, now)
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
            ]
        )
        return fresh.access_token

    def _still_valid(self, record: TokenRecord, now: datetime) -> str:
        if record.expires_at is not None and record.expires_at <= now:
            raise ProviderUnavailable(
                "The shop's access token has expired and Shopify could not refresh it just now; try again shortly."
            )
        return record.value or ""

    async def _take_lease(self, key: str, now: datetime) -> bool:
        return await self.store.take_refresh_lease(key, now=now, until=now + LEASE)

    async def _release_lease(self, key: str) -> None:
        await self.store.end_refresh_lease(key)

    async def _wait_for_other_process(self, key: str) -> str | None:
        # Another process holds the lease and is talking to Shopify; its result lands in the row.
        deadline = utcnow() + LEASE
        while utcnow() < deadline:
            await asyncio.sleep(WAIT_STEP_SECONDS)
            record = await self.store.get_record(key)
            if record is None:
                return None  # deleted meanwhile (uninstalled)
            if record.refresh_lease_until is None:
                return record.value
        raise ProviderUnavailable("Another instance is refreshing this shop's token and has not finished; try again.")

    def _client_id(self) -> str:
        if not self.settings.shopify_api_key:
            raise NotConfigured("SHOPIFY_API_KEY is not set, so Shopify tokens cannot be refreshed.")
        return self.settings.shopify_api_key

    def _client_secret(self) -> str:
        if self.settings.shopify_api_secret is None:
            raise NotConfigured("SHOPIFY_API_SECRET is not set, so Shopify tokens cannot be refreshed.")
        return str(self.settings.shopify_api_secret)
