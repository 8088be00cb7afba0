"""What the health model stores, and what the sweep reads (DESIGN.md, "Connection health").

`store.verdicts` writes a provider's verdict on a stored token in one place (`record`): the clients,
the refresh, `tokens check --online` and the sweep all call it. A verdict that changes the stored
health is an event in the same transaction (`health_changed`, `marked_dead`, `recovered`: DESIGN.md,
"The event log") and a `health.changed` log line. It also keeps the shared Shopify refresh cooldown
(each failure a `refresh_failed` event), notes which shops bots use, hands the merchant's page what
the providers removed since it was last shown, and finds the sweep's work through the partial indexes
of revision 0010.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from service import keys
from service.crypto import KeyRing
from service.db import DATABASE_ERRORS
from service.errors import InvalidInput, UndecryptableValue
from service.logs import event as log_event
from service.models import utcnow
from service.vault import events, sql
from service.vault.events import Actor, Event
from service.vault.health import EXPIRING_SOON, NEEDS_RECONNECT, OK, REASONS, Health
from service.vault.planner import Plan, Step, plan_checked, plan_health, plan_note_used, plan_refresh_failed
from service.vault.schema import validate_key
from service.vault.writes import ReadWrite

if TYPE_CHECKING:
    from service.vault.ports import Backend, RecordingWriter

logger = logging.getLogger("salesbot.vault")
# A process writes the shops its bots asked for at most this often (one statement for all of them).
NOTE_USED_EVERY = 60.0


@dataclass(frozen=True)
class Removal:
    """A store or Page a provider removed, as the merchant's page tells it once."""

    provider: str  # "shopify" | "facebook"
    subject: str  # the shop domain or the Page id
    name: str | None
    reason: str  # a reason code whose state is "gone"
    removed_at: datetime

    @property
    def health(self) -> Health:
        return Health(REASONS[self.reason].state, self.reason)


@dataclass(frozen=True)
class _Recorded:
    held: bool  # the row held the token the verdict is about
    changed: bool  # and its stored health changed


@dataclass(frozen=True)
class PageToCheck:
    key: str
    page_id: str
    token: str = field(repr=False)
    ciphertext: str = field(repr=False)  # what the row held when read: verdicts are written only while it does


class Verdicts:
    def __init__(self, store: RecordingWriter, backend: Backend, ring: KeyRing) -> None:
        self._store = store
        self._backend = backend
        self._ring = ring
        self._used: set[str] = set()  # shop token keys bots asked for since the last note
        self._note_due = 0.0  # time.monotonic() after which the next ask writes them
        self._noting: asyncio.Task[None] | None = None

    # --- verdicts ----------------------------------------------------------------------------------

    async def record(
        self,
        key: str,
        verdict: Health,
        *,
        token: str | None = None,
        expected: str | None = None,
        checked: bool = True,
        by: Actor | None = None,
        refused: bool = False,
    ) -> bool:
        """Store a provider's verdict on the token under `key`: the one place health is written. Only
        while the row holds `token` (its plaintext) or `expected` (its ciphertext), when given; `checked`:
        the provider was asked just now. True when the stored health changed (which every process's
        cached connection then hears of); the change is an event by `by` in the same transaction
        (`health_changed`; `recovered` back to ok; `marked_dead` when `refused`: the provider refused the
        token in use) and a `health.changed` log line."""
        return (await self._record(key, verdict, token, expected, checked, by, refused)).changed

    async def mark_dead(self, key: str, verdict: Health, *, token: str | None = None, by: Actor | None = None) -> bool:
        """The provider refused the token in use (`record` with refused=True); True when the row held it
        (`token`, when given), whether or not it was known dead before."""
        return (await self._record(key, verdict, token, None, False, by, True)).held

    async def _record(
        self,
        key: str,
        verdict: Health,
        token: str | None,
        expected: str | None,
        checked: bool,
        by: Actor | None,
        refused: bool,
    ) -> _Recorded:
        validate_key(key)
        if verdict.state not in (OK, EXPIRING_SOON, NEEDS_RECONNECT):
            raise InvalidInput(f"A stored verdict is ok, expiring_soon or needs_reconnect, not {verdict.state}.")
        if token is not None:
            expected = await self.ciphertext_holding(key, token)
            if expected is None:
                return _Recorded(False, False)  # rewritten meanwhile (a reconnect): the verdict was about another token
        state = None if verdict.state == OK else verdict.state
        now = utcnow()
        recorder = self._store.recorder

        def decide(found: list[list[Any]]) -> tuple[Plan, _Recorded]:
            if not found[0] or (expected is not None and found[0][0][0] != expected):
                return Plan(), _Recorded(False, False)
            ciphertext, stored, reason, until = found[0][0]
            if (stored, reason, sql.from_disk(until)) == (state, verdict.reason, verdict.until):
                return plan_checked([(key, ciphertext)] if checked else [], now), _Recorded(True, False)
            plan = plan_health(key, state, verdict.reason, verdict.until, expected=ciphertext, now=now, checked=checked)
            said = Event(
                _kind(verdict, refused),
                key=key,
                health=verdict.state,
                reason=verdict.reason,
                fingerprint=self._print(ciphertext, key),
                detail=None if verdict.until is None else {"until": verdict.until.isoformat(timespec="seconds")},
            )
            return recorder.record(plan, [said], by=by, now=now), _Recorded(True, True)

        unit = ReadWrite([(sql.HEALTH_ROW, {"key": key})], decide)
        recorded: _Recorded = (await self._store.read_write(unit)).result
        if recorded.changed:
            _log_change(key, verdict)
        return recorded

    def _print(self, ciphertext: str, key: str) -> str | None:
        """The fingerprint of the token a verdict is about (vault/events.py); None when no key opens it."""
        try:
            return self._ring.fingerprint(self._ring.decrypt(ciphertext, key_name=key))
        except UndecryptableValue:
            return None

    async def ciphertext_holding(self, key: str, token: str) -> str | None:
        """The row's ciphertext while it still holds `token`, else None."""
        with DATABASE_ERRORS:
            rows = await self._backend.fetch(sql.CIPHERTEXTS, {"keys": [key]})
        if not rows:
            return None
        ciphertext = rows[0][1]
        try:
            held = self._ring.decrypt(ciphertext, key_name=key)
        except UndecryptableValue:
            return None
        return ciphertext if held == token else None

    async def checked(self, rows: Sequence[tuple[str, str]]) -> None:
        """The provider found these (key, ciphertext) rows as stored: only when they were checked changes."""
        await self._store.write(plan_checked(rows, utcnow()))

    async def refresh_failed(
        self, key: str, *, failures: int, retry_at: datetime, reason: str, health: Health, by: Actor | None = None
    ) -> None:
        """A failed Shopify refresh: the lease ends, no process tries the shop again before retry_at, and
        a `refresh_failed` event says so (reason: what failed; health: where that leaves the store)."""
        said = Event(
            events.REFRESH_FAILED,
            key=key,
            health=health.state,
            reason=reason,
            detail={"failures": failures, "retry_at": retry_at.isoformat(timespec="seconds")},
        )
        await self._store.write(plan_refresh_failed(key, failures, retry_at), events=[said], by=by)

    # --- which shops bots use --------------------------------------------------------------------

    def note_used(self, key: str) -> None:
        """A bot asked for this shop's token (cheap: a set; written at most once a NOTE_USED_EVERY)."""
        self._used.add(key)
        now = time.monotonic()
        if now >= self._note_due and (self._noting is None or self._noting.done()):
            self._note_due = now + NOTE_USED_EVERY
            used, self._used = sorted(self._used), set()
            self._noting = asyncio.get_running_loop().create_task(self._write_used(used))

    async def _write_used(self, used: list[str]) -> None:
        try:
            await self._store.write(plan_note_used(used, utcnow()))
        except Exception as error:  # bookkeeping only: the sweep then refreshes these shops on demand
            logger.warning("could not note which shops are in use (%s)", type(error).__name__)

    async def aclose(self) -> None:
        if self._noting is not None:
            await self._noting

    # --- what the sweep looks at -------------------------------------------------------------------

    async def shops_due(self, now: datetime, *, within: timedelta, used_since: datetime, limit: int) -> list[str]:
        """Keys of shops in use (a bot asked since used_since) whose token expires within `within`."""
        params = {"now": now, "horizon": now + within, "used_since": used_since, "limit": limit}
        return [row[0] for row in await self._backend.scan(sql.SHOPS_DUE, params)]

    async def chains_ending(self, now: datetime, *, within: timedelta, limit: int) -> list[str]:
        """Keys of shops whose refresh token ends within `within` (a quiet shop's chain to keep warm)."""
        params = {"now": now, "horizon": now + within, "limit": limit}
        return [row[0] for row in await self._backend.scan(sql.CHAINS_ENDING, params)]

    async def pages_to_check(self, *, checked_before: datetime, limit: int) -> list[PageToCheck]:
        """Page tokens never checked, then those checked longest ago (before checked_before), decrypted."""
        rows = list(await self._backend.scan(sql.PAGES_NEVER_CHECKED, {"limit": limit}))
        if len(rows) < limit:
            params = {"before": checked_before, "limit": limit - len(rows)}
            rows += await self._backend.scan(sql.PAGES_CHECKED_BEFORE, params)
        found = []
        for key, ciphertext in rows:
            try:
                token = self._ring.decrypt(ciphertext, key_name=key)
            except UndecryptableValue:
                continue  # `tokens check` lists these; there is nothing to ask Facebook about
            found.append(PageToCheck(key, key.removeprefix(keys.PAGE_TOKEN_PREFIX), token, ciphertext))
        return found

    # --- what the providers removed ----------------------------------------------------------------

    async def take_removals(self, account: str) -> list[Removal]:
        """What the providers removed from this account since its page last showed it; marked seen, so
        each is told once (two pages opened at once do not both tell it)."""
        rows = await self._backend.fetch(sql.UNSEEN_REMOVALS, {"account": account})
        if not rows:
            return []
        (seen,) = await self._store.write(
            Plan([Step(sql.SEEN_REMOVALS, [{"ids": [row[0] for row in rows], "now": utcnow()}], returning=True)])
        )
        return [_removal(row) for row in rows if row[0] in set(seen)]

    async def prune_removals(self, before: datetime) -> int:
        (pruned,) = await self._store.write(Plan([Step(sql.PRUNE_REMOVALS, [{"before": before}], returning=True)]))
        return len(pruned)


def _kind(verdict: Health, refused: bool) -> str:
    """The event a change of stored health is."""
    if verdict.state == OK:
        return events.RECOVERED
    return events.MARKED_DEAD if refused and verdict.state == NEEDS_RECONNECT else events.HEALTH_CHANGED


def _log_change(key: str, verdict: Health) -> None:
    """`health.changed provider=… subject=… health=… reason=…`: WARNING when a merchant must reconnect."""
    info = keys.describe_key(key)
    provider = info.provider if info is not None else None
    subject = events.subject_of(provider, info.subject if info is not None else key)
    level = logging.WARNING if verdict.state == NEEDS_RECONNECT else logging.INFO
    log_event(
        logger,
        "health.changed",
        level=level,
        provider=provider,
        subject=subject,
        health=verdict.state,
        reason=verdict.reason,
    )


def _removal(row: Sequence[Any]) -> Removal:
    _id, provider, subject, name, reason, removed_at = row
    return Removal(provider, subject, name, reason, sql.from_disk(removed_at))  # type: ignore[arg-type]
