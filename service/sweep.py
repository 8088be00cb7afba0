"""The sweep: keeps connections alive and checked before a shopper finds one broken (DESIGN.md, "The sweep").

One round at a time across every instance and worker (service/leadership.py): inside `serve`, the
worker that leads `sweep` runs one a minute after the last ended (a round takes ~30 s); `salesbot
sweep` (cron) runs one. Every round holds `sweep-round` while it runs, so a cron run beside a serving
leader waits for the round running there, then finds its work done (what it refreshed is no longer
due, what it checked not due again for hours).

1. Shops in use (a bot asked for the token within the last hour or so) whose token expires within
   LEAD are refreshed now, so no bot waits for a refresh.
2. Refresh chains: a shop whose refresh token ends within KEEP_WARM (a quiet shop: nobody refreshed
   it for two months) is refreshed, which starts its 90 days again. If that keeps failing, its health
   says expiring_soon from 14 days before the end (vault/health.py), and the cooldown paces the tries.
3. Page tokens are asked about with Graph's debug_token (the app token app_id|app_secret): those never
   checked first, then those checked longest ago, none again within RECHECK_AFTER, at most
   `page_checks` a round (and so a minute). The answer is the Page's health (health.of_token_status).

A round is bounded (LIMIT on every query; a few calls in flight, at most CALLS_PER_SECOND started a
second) and every query runs off the event loop or is a short indexed read, so the requests the same
process serves meanwhile stay quick (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import httpx

from service import keys
from service.errors import (
    NotConfigured,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    ServiceError,
    TokenRevoked,
)
from service.leadership import Leadership, run_periodically
from service.models import utcnow
from service.providers import facebook, shopify
from service.vault import NOTE_USED_EVERY, PageToCheck, TokenStore, health
from service.vault.events import SWEEP, Actor

logger = logging.getLogger("salesbot.sweep")
BY_SWEEP = Actor.of(SWEEP)  # who the sweep's writes are by in the event log, in whatever process runs it
T = TypeVar("T")
LEADERSHIP = "sweep"  # which worker of all instances runs rounds inside serve
ROUND = "sweep-round"  # held while a round runs, by serve's leader or a cron run alike
SWEEP_EVERY = 60.0  # seconds between rounds inside serve
LEAD = timedelta(minutes=10)  # a shop in use is refreshed this long before its token expires (bots: 5 min)
USED_WITHIN = timedelta(hours=1) + timedelta(seconds=2 * NOTE_USED_EVERY)  # "in use": asked this recently
KEEP_WARM = timedelta(days=30)  # a refresh chain this close to its end is refreshed
RECHECK_AFTER = timedelta(hours=20)  # a Page is checked at least daily, and not again within this
# A round's work. At CALLS_PER_SECOND it takes about 32 s; rounds start SWEEP_EVERY after the last one
# ended, so every ~92 s: at most 200 debug_token calls a minute, and ~188,000 Page checks a day, each
# Page daily up to ~150,000 Pages. Refreshing ahead is a convenience (a bot refreshes on demand anyway),
# so it gets what is left of the budget.
PAGE_CHECKS_PER_ROUND = 200
REFRESHES_PER_ROUND = 600
AT_ONCE = 8  # provider calls in flight at a time
# Provider calls started per second: a round's work is spread out, so the requests the same process
# serves meanwhile never queue behind a burst of it (docs/performance.md, the sweep beside serving).
CALLS_PER_SECOND = 25.0


class Pace:
    """Starts at most `per_second` calls a second, across every worker that waits its turn."""

    def __init__(self, per_second: float) -> None:
        self.gap = 1.0 / per_second
        self.next = 0.0

    async def turn(self) -> None:
        now = asyncio.get_running_loop().time()
        start = max(now, self.next)
        self.next = start + self.gap
        if start > now:
            await asyncio.sleep(start - now)


async def each(items: Iterable[T], work: Callable[[T], Awaitable[object]]) -> None:
    """`work` on every item, AT_ONCE at a time (workers, not a task per item)."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(AT_ONCE)))


@dataclass
class SweepReport:
    refreshed: int = 0
    refresh_failed: int = 0  # will be tried again after the shop's cooldown
    refused: list[str] = field(default_factory=list)  # shops whose refresh Shopify refused (needs reconnecting)
    pages_checked: int = 0
    changed: list[tuple[str, str]] = field(default_factory=list)  # (Page id, new health) where it changed
    stopped: str | None = None  # why a part stopped early (credentials missing, rate-limited)

    def line(self) -> str:
        text = (
            f"refreshed {self.refreshed} shops ({self.refresh_failed} failed, {len(self.refused)} refused); "
            f"checked {self.pages_checked} Pages ({len(self.changed)} changed)"
        )
        return text + (f"; stopped early: {self.stopped}" if self.stopped else "")


class Sweep:
    def __init__(
        self,
        store: TokenStore,
        client: httpx.AsyncClient,
        *,
        page_checks: int = PAGE_CHECKS_PER_ROUND,
        refreshes: int = REFRESHES_PER_ROUND,
        calls_per_second: float = CALLS_PER_SECOND,
    ) -> None:
        self.store = store
        self.settings = store.settings
        self.page_checks = page_checks
        self.refreshes = refreshes
        self.pace = Pace(calls_per_second)
        self.graph: facebook.Graph | None = None
        if self.settings.facebook_app_id and self.settings.facebook_app_secret is not None:
            self.graph = facebook.Graph(
                client,
                graph_base=self.settings.facebook_graph_base_url,
                version=self.settings.facebook_graph_version,
                app_id=self.settings.facebook_app_id,
                app_secret=str(self.settings.facebook_app_secret),
            )

    async def round(self) -> SweepReport:
        report = SweepReport()
        await self._refresh_shops(report)
        await self._check_pages(report)
        return report

    # --- Shopify -------------------------------------------------------------------------------------

    async def _refresh_shops(self, report: SweepReport) -> None:
        if not self.settings.shopify_api_key or self.settings.shopify_api_secret is None:
            return  # nothing can be refreshed here (nor by any bot of this deployment)
        now = utcnow()
        verdicts = self.store.verdicts
        due = await verdicts.shops_due(now, within=LEAD, used_since=now - USED_WITHIN, limit=self.refreshes)
        ending = await verdicts.chains_ending(now, within=KEEP_WARM, limit=max(0, self.refreshes - len(due)))
        work = [(key, LEAD) for key in due] + [(key, KEEP_WARM) for key in ending if key not in set(due)]

        async def refresh(item: tuple[str, timedelta]) -> None:
            key, margin = item
            domain = key.removeprefix(keys.SHOPIFY_TOKEN_PREFIX) + shopify.SHOP_SUFFIX
            before = await self.store.get_token(key)
            await self.pace.turn()
            try:
                token = await self.store.shopify_tokens.get(domain, margin=margin, by=BY_SWEEP)
            except TokenRevoked:
                report.refused.append(domain)  # recorded: the store needs reconnecting
                return
            except (ProviderUnavailable, NotConfigured):
                report.refresh_failed += 1  # the shop's cooldown (in its row) paces the next try
                return
            except ServiceError as error:  # one odd row (an imported key no shop name fits) stops nothing
                logger.warning("sweep: could not refresh %s (%s)", key, error.code)
                report.refresh_failed += 1
                return
            if token is None:
                return  # uninstalled meanwhile
            if token != before:
                report.refreshed += 1
                return
            after = await self.store.get_record(key)  # unchanged: did Shopify fail (its token still valid)?
            if after is not None and after.refresh_retry_at is not None and after.refresh_retry_at > now:
                report.refresh_failed += 1

        await each(work, refresh)

    # --- Facebook ------------------------------------------------------------------------------------

    async def _check_pages(self, report: SweepReport) -> None:
        if self.graph is None or self.page_checks <= 0:
            return
        pages = await self.store.verdicts.pages_to_check(
            checked_before=utcnow() - RECHECK_AFTER, limit=self.page_checks
        )
        unchanged: list[tuple[str, str]] = []

        async def check(page: PageToCheck) -> None:
            if report.stopped:
                return
            await self.pace.turn()
            try:
                found = await self.check_page(page)
            except (RateLimited, ProviderUnavailable, TokenRevoked) as error:
                # Facebook asks us to slow down, does not answer, or refuses the app's own token: the rest
                # wait for the next round.
                report.stopped = f"{error.code} asking Facebook about Page {page.page_id}"
                return
            except ProviderError:
                unchanged.append((page.key, page.ciphertext))  # no usable answer: asked again tomorrow
                return
            report.pages_checked += 1
            if found is None:
                unchanged.append((page.key, page.ciphertext))
            else:
                report.changed.append((page.page_id, found))

        await each(pages, check)
        await self.store.verdicts.checked(unchanged)  # one write for all of them

    async def check_page_now(self, page_id: str) -> str | None:
        """Check one Page at once, whatever its schedule (the demo's buttons); None when it has no token."""
        key = keys.page_token_key(page_id)
        token = await self.store.get_token(key)
        expected = None if token is None else await self.store.verdicts.ciphertext_holding(key, token)
        if token is None or expected is None:
            return None
        await self.check_page(PageToCheck(key, page_id, token, expected))
        return (await self.store.page_connection(page_id)).health  # type: ignore[union-attr]

    async def check_page(self, page: PageToCheck) -> str | None:
        """Ask debug_token about one Page token and record the verdict; the new state when it changed."""
        assert self.graph is not None
        data = await self.graph.debug_token(page.token)
        found = health.of_token_status(facebook.token_status(data, page_id=page.page_id), utcnow())
        changed = await self.store.verdicts.record(page.key, found, expected=page.ciphertext, by=BY_SWEEP)
        return found.state if changed else None


async def sweep_once(store: TokenStore, client: httpx.AsyncClient, **limits: int) -> SweepReport:
    report = await Sweep(store, client, **limits).round()
    if report.refreshed or report.refresh_failed or report.refused or report.changed or report.stopped:
        logger.info("sweep: %s", report.line())
    return report


async def sweep_periodically(store: TokenStore, client: httpx.AsyncClient, every: float = SWEEP_EVERY) -> None:
    """A round every `every` seconds until cancelled, in the one worker of all instances that leads
    (service/leadership.py, `sweep`); each round also waits its turn beside cron's (`sweep_when_free`)."""
    await run_periodically(store.settings.database_url, LEADERSHIP, lambda: sweep_when_free(store, client), every)


async def sweep_when_free(store: TokenStore, client: httpx.AsyncClient, **limits: int) -> SweepReport:
    """One round, once no other process is running one (serve's leader, or another cron's): then it does
    what is still due, which is nothing that round already did. Rounds take their own lock (ROUND): the
    leader holds `sweep` as long as it lives, so cron beside a running serve still gets its turn."""
    async with Leadership(store.settings.database_url, ROUND) as turn:
        await turn.acquire(wait=True)
        return await sweep_once(store, client, **limits)
