"""`salesbot tokens check [--online]`: can every stored value be read, and does every token still work?

Every row is decrypted, batch by batch; rows no key in the ring opens are listed by key. With
--online, each access token is also put to its provider: Facebook's `debug_token` (is_valid) for
Page and user tokens, a cheap Admin API call (`shop.json`) for Shopify tokens. UUID entries are not
tokens and are only decrypted.

Marking the dead ones: their `expires_at` is set to the time of the check (only when it was empty or
later, and only if the token was not rewritten meanwhile: compare-and-swap on the ciphertext). The
service already treats a token past its `expires_at` as expired (it refreshes a Shopify token that has
a refresh token, and otherwise asks the merchant to connect again), nothing else about the row
changes, and a new token from a reconnect replaces the mark. The dead keys are printed too.

A provider that cannot answer (timeout, 5xx, app credentials not configured) makes the token
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
from service.vault import TokenStore
from service.vault.bulk import StoredRow

CONCURRENCY = 8
LIVE, DEAD, UNKNOWN = "live", "dead", "unknown"


@dataclass
class CheckReport:
    online: bool = False
    rows: int = 0
    readable: int = 0
    unreadable: list[str] = field(default_factory=list)
    live: int = 0
    dead: list[str] = field(default_factory=list)
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (key, why)
    marked: int = 0  # dead rows whose expires_at this run set

    @property
    def ok(self) -> bool:
        return not self.unreadable and not self.dead and not self.unknown

    def summary(self) -> str:
        text = f"{self.rows:,} rows, {self.readable:,} readable, {len(self.unreadable):,} unreadable"
        if self.online:
            text += f"; {self.live:,} live, {len(self.dead):,} dead ({self.marked:,} marked)"
            text += f", {len(self.unknown):,} unknown"
        return text + "."

    def table(self) -> str:
        cells = [("rows", self.rows), ("readable", self.readable), ("unreadable", len(self.unreadable))]
        if self.online:
            cells += [("live", self.live), ("dead", len(self.dead)), ("unknown", len(self.unknown))]
        width = max(len(name) for name, _ in cells)
        return "\n".join(f"{name:<{width}}  {count:>10,}" for name, count in cells)


def provider_of(row: StoredRow) -> str | None:
    if row.provider:
        return row.provider
    if row.key == keys.SEED_FACEBOOK_USER_TOKEN:
        return keys.FACEBOOK
    info = keys.describe_key(row.key)
    return info.provider if info is not None else None


class OnlineCheck:
    """Asks the providers about one token at a time; network injected through the client."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.graph: facebook.Graph | None = None
        if settings.facebook_app_id and settings.facebook_app_secret is not None:
            self.graph = facebook.Graph(
                client,
                graph_base=settings.facebook_graph_base_url,
                version=settings.facebook_graph_version,
                app_id=settings.facebook_app_id,
                app_secret=str(settings.facebook_app_secret),
            )

    async def verdict(self, row: StoredRow, token: str) -> tuple[str, str]:
        provider = provider_of(row)
        try:
            if provider == keys.SHOPIFY:
                info = keys.describe_key(row.key)
                shop = row.subject or (info.subject if info is not None else "")
                base = shopify.admin_base_url(self.settings.shopify_admin_base_url, shop)
                works = await shopify.token_works(
                    self.client, admin_base=base, access_token=token, api_version=self.settings.shopify_api_version
                )
                return (LIVE, "") if works else (DEAD, "Shopify refused it")
            if provider == keys.FACEBOOK:
                if self.graph is None:
                    return UNKNOWN, "FACEBOOK_APP_ID and FACEBOOK_APP_SECRET are needed to ask Facebook"
                data = await self.graph.debug_token(token)
                return (LIVE, "") if data.get("is_valid") is True else (DEAD, "Facebook says it is not valid")
        except TokenRevoked:
            return DEAD, "the provider says it was revoked"
        except (ProviderError, ServiceError) as error:
            return UNKNOWN, error.message
        return UNKNOWN, "no provider known for this key"


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
    checker = OnlineCheck(client, settings) if online and client is not None and settings is not None else None
    gate = asyncio.Semaphore(CONCURRENCY)
    check_batch_size(batch_size)
    progress = progress or Silent()
    progress.total = await store.bulk.count()

    async def ask(row: StoredRow, token: str) -> tuple[StoredRow, str, str]:
        assert checker is not None
        async with gate:
            return (row, *await checker.verdict(row, token))

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
        dead_rows: list[StoredRow] = []
        for row, verdict, why in await asyncio.gather(*questions):
            if verdict == LIVE:
                report.live += 1
            elif verdict == DEAD:
                report.dead.append(row.key)
                dead_rows.append(row)
            else:
                report.unknown.append((row.key, why))
        report.marked += await store.bulk.mark_expired(dead_rows, when)
        progress.update(len(batch))
        await call_hook(after_batch, report.rows)
    progress.finish(report.summary())
    return report
