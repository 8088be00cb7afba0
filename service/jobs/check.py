"""`salesbot tokens check [--online]`: can every stored value be read, and does every token still work?

Every row is decrypted, batch by batch; rows no key in the ring opens are listed by key. With
--online, each access token is also put to its provider: Facebook's `debug_token` for Page and user
tokens, a cheap Admin API call (`shop.json`) for Shopify tokens. UUID entries are not tokens and are
only decrypted.

What a provider says is the connection's health (service/vault/health.py), recorded as the bot's
clients and the sweep record it (`store.verdicts.record`), so the connections page says the same:

- Shopify: a token Shopify refuses is given one refresh first (a token due for one is refreshed before
  it is asked about). If that works the store is fine ("live"); if Shopify answers `invalid_grant`, or
  the token cannot be refreshed, the store needs reconnecting ("dead", with the reason).
- Facebook: `is_valid: false` is "dead", with the reason its error subcode names (password_changed...);
  `pages_messaging` not granted for the Page is dead too; data access ending within 14 days is
  "expiring"; a token found working again is recorded so (its earlier verdict cleared).

A verdict is written only while the row still holds the token asked about (a reconnect meanwhile
wins). A provider that cannot answer (timeout, 5xx, app credentials not configured) makes the token
"unknown", never "dead": a check must not condemn a token because a network blinked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from service import keys
from service.errors import ProviderError, ServiceError, TokenRevoked, UndecryptableValue
from service.jobs.base import DEFAULT_BATCH_SIZE, call_hook, check_batch_size
from service.jobs.progress import Progress, Silent
from service.models import utcnow
from service.providers import facebook, shopify
from service.settings import Settings
from service.vault import StoredRow, TokenStore, health

CONCURRENCY = 8
LIVE, EXPIRING, DEAD, UNKNOWN = "live", "expiring", "dead", "unknown"


@dataclass
class CheckReport:
    online: bool = False
    rows: int = 0
    readable: int = 0
    unreadable: list[str] = field(default_factory=list)
    live: int = 0
    dead: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # dead or expiring key -> its reason code
    expiring: list[str] = field(default_factory=list)  # working, with an end the merchant can prevent
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (key, why)
    marked: int = 0  # dead rows not recorded as needing reconnecting before this run

    @property
    def ok(self) -> bool:
        return not self.unreadable and not self.dead and not self.unknown

    def summary(self) -> str:
        text = f"{self.rows:,} rows, {self.readable:,} readable, {len(self.unreadable):,} unreadable"
        if self.online:
            text += f"; {self.live:,} live, {len(self.expiring):,} expiring, {len(self.dead):,} dead"
            text += f", {len(self.unknown):,} unknown ({self.marked:,} newly found dead)"
        return text + "."

    def table(self) -> str:
        cells = [("rows", self.rows), ("readable", self.readable), ("unreadable", len(self.unreadable))]
        if self.online:
            cells += [("live", self.live), ("expiring", len(self.expiring)), ("dead", len(self.dead))]
            cells += [("unknown", len(self.unknown))]
        width = max(len(name) for name, _ in cells)
        return "\n".join(f"{name:<{width}}  {count:>10,}" for name, count in cells)


def provider_of(row: StoredRow) -> str | None:
    if row.provider:
        return row.provider
    if row.key == keys.SEED_FACEBOOK_USER_TOKEN:
        return keys.FACEBOOK
    info = keys.describe_key(row.key)
    return info.provider if info is not None else None


@dataclass(frozen=True)
class Verdict:
    outcome: str  # LIVE, EXPIRING, DEAD, UNKNOWN
    why: str = ""  # a reason code (dead, expiring) or a sentence (unknown)
    health: health.Health | None = None  # to record; None when already recorded (by a refresh) or unknown


class OnlineCheck:
    """Asks the providers about one token at a time; network injected through the client."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings, store: TokenStore) -> None:
        self.client = client
        self.settings = settings
        self.store = store
        self.graph: facebook.Graph | None = None
        if settings.facebook_app_id and settings.facebook_app_secret is not None:
            self.graph = facebook.Graph(
                client,
                graph_base=settings.facebook_graph_base_url,
                version=settings.facebook_graph_version,
                app_id=settings.facebook_app_id,
                app_secret=str(settings.facebook_app_secret),
            )

    async def verdict(self, row: StoredRow, token: str, now: datetime) -> Verdict:
        provider = provider_of(row)
        info = keys.describe_key(row.key)
        try:
            if provider == keys.SHOPIFY and info is not None:
                return await self._shopify(info.subject, token)
            if provider == keys.FACEBOOK:
                if self.graph is None:
                    return Verdict(UNKNOWN, "FACEBOOK_APP_ID and FACEBOOK_APP_SECRET are needed to ask Facebook")
                page_id = info.subject if row.key.startswith(keys.PAGE_TOKEN_PREFIX) and info else None
                try:
                    data = await self.graph.debug_token(token)
                except TokenRevoked:
                    # Graph refused the app token it was asked with, not the token asked about.
                    return Verdict(UNKNOWN, "Facebook refused the app's credentials (FACEBOOK_APP_ID, _SECRET)")
                return _verdict(health.of_token_status(facebook.token_status(data, page_id=page_id), now))
        except TokenRevoked as error:
            return Verdict(DEAD, error.reason or "token_invalid", health.verdict(error.reason or "token_invalid"))
        except (ProviderError, ServiceError) as error:
            return Verdict(UNKNOWN, error.message)
        return Verdict(UNKNOWN, "no provider known for this key")

    async def _shopify(self, shop: str, token: str) -> Verdict:
        try:
            # Due for a refresh: refreshed first (and a store already known dead is not asked again).
            current = await self.store.get_shopify_token(shop) or token
        except TokenRevoked as error:
            return Verdict(DEAD, error.reason or "refresh_refused")  # recorded by the refresh that found it
        base = shopify.admin_base_url(self.settings.shopify_admin_base_url, shop)
        version = self.settings.shopify_api_version
        if await shopify.token_works(self.client, admin_base=base, access_token=current, api_version=version):
            return Verdict(LIVE, "", health.HEALTHY)
        try:
            # Refused: one refresh, as the bot's client would. It records invalid_grant itself.
            await self.store.get_shopify_token(shop, refused=current)
        except TokenRevoked as error:
            return Verdict(DEAD, error.reason or "refresh_refused")
        return Verdict(LIVE)  # refreshed: a new token, which starts with a clean bill


def _verdict(found: health.Health) -> Verdict:
    if found.state == health.NEEDS_RECONNECT:
        return Verdict(DEAD, found.reason or "token_invalid", found)
    if found.state == health.EXPIRING_SOON:
        return Verdict(EXPIRING, found.reason or "", found)
    return Verdict(LIVE, "", found)


async def check_tokens(
    store: TokenStore,
    *,
    online: bool = False,
    settings: Settings | None = None,
    client: httpx.AsyncClient | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    after_batch: Callable[[int], Any] | None = None,
    now: datetime | None = None,
) -> CheckReport:
    if online and (client is None or settings is None):
        raise ValueError("an online check needs settings and an HTTP client")
    report = CheckReport(online=online)
    when = now or utcnow()
    checker = OnlineCheck(client, settings, store) if online and client is not None and settings is not None else None
    gate = asyncio.Semaphore(CONCURRENCY)
    check_batch_size(batch_size)
    progress = progress or Silent()
    progress.total = await store.bulk.count()

    async def ask(row: StoredRow, token: str) -> tuple[StoredRow, Verdict]:
        assert checker is not None
        async with gate:
            return row, await checker.verdict(row, token, when)

    async for batch in store.bulk.batches(batch_size):
        questions = []
        for row in batch:
            report.rows += 1
            try:
                token = store.bulk.decrypt(row)
            except UndecryptableValue:
                report.unreadable.append(row.key)
                continue
            report.readable += 1
            if checker is not None and row.type == "token":
                questions.append(ask(row, token))
        for row, found in await asyncio.gather(*questions):
            if found.outcome == UNKNOWN:
                report.unknown.append((row.key, found.why))
                continue
            if found.outcome == DEAD:
                report.dead.append(row.key)
                report.marked += row.health != health.NEEDS_RECONNECT
            elif found.outcome == EXPIRING:
                report.expiring.append(row.key)
            if found.outcome in (DEAD, EXPIRING):
                report.reasons[row.key] = found.why
            else:
                report.live += 1
            if found.health is not None:
                # A token the provider refused is `marked_dead` in the event log, as the bot's clients mark it.
                dead = found.outcome == DEAD
                await store.verdicts.record(row.key, found.health, expected=row.value, refused=dead)
        progress.update(len(batch))
        await call_hook(after_batch, report.rows)
    progress.finish(report.summary())
    return report
