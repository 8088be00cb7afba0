"""The event log's reading side and its outbox: listings, what is due for the webhook, what became of
each delivery, retention and erasure (DESIGN.md, "The event log"). `store.event_log` is one of these.

Reads go through the vault's backend; every write is a plan run by the store's writer, as for tokens.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from service.vault import sql
from service.vault.events import DELIVERY_WINDOW, FAILED, NO_SUBJECT, PENDING, subject_of
from service.vault.planner import Plan, Step

if TYPE_CHECKING:
    from service.vault.ports import Backend, Writer

_COLUMNS = (
    "seq",
    "id",
    "at",
    "kind",
    "key",
    "account_uuid",
    "provider",
    "subject",
    "name",
    "actor",
    "instance",
    "os_user",
    "reason",
    "health",
    "fingerprint",
    "detail",
)
_SELECT = ", ".join(f"e.{column}" for column in _COLUMNS)
PAGE_SIZE = 500
# Retention deletes this many events at most per housekeeping run, so no run holds the writer long.
PRUNE_BITE = 10_000


@dataclass(frozen=True)
class LoggedEvent:
    """An event as stored: `as_dict()` is its JSON (the webhook's body, `salesbot events --json`)."""

    seq: int  # the order events were committed in: store.events() resumes after one
    id: str
    at: datetime
    kind: str
    key: str | None
    account: str | None
    provider: str | None
    subject: str | None
    name: str | None
    actor: str
    instance: str | None
    os_user: str | None
    reason: str | None
    health: str | None
    fingerprint: str | None
    detail: dict[str, Any] | None

    @classmethod
    def of(cls, row: Sequence[Any]) -> LoggedEvent:
        fields = dict(zip(_COLUMNS, row, strict=True))
        fields["account"] = fields.pop("account_uuid")
        fields["at"] = sql.from_disk(fields["at"])
        fields["detail"] = None if fields["detail"] is None else json.loads(fields["detail"])
        return cls(**fields)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "kind": self.kind,
            "when": _iso(self.at),
            "account": self.account,
            "provider": self.provider,
            "subject": self.subject,
            "name": self.name,
            "key": self.key,
            "by": {"actor": self.actor, "instance": self.instance, "os_user": self.os_user},
            "health": self.health,
            "reason": self.reason,
            "fingerprint": self.fingerprint,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Delivery:
    """An outbox row with its event: what the webhook worker sends."""

    seq: int
    subject_key: str
    status: str
    attempts: int
    next_attempt_at: datetime
    deadline_at: datetime
    last_attempt_at: datetime | None
    last_error: str | None
    event: LoggedEvent

    @classmethod
    def of(cls, row: Sequence[Any]) -> Delivery:
        seq, subject_key, status, attempts, next_at, deadline, last_at, last_error, *event = row
        return cls(
            seq,
            subject_key,
            status,
            attempts,
            sql.from_disk(next_at),  # type: ignore[arg-type]
            sql.from_disk(deadline),  # type: ignore[arg-type]
            sql.from_disk(last_at),
            last_error,
            LoggedEvent.of(event),
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Filters:
    """Which events: an account, a connection (provider and subject), a kind, a time."""

    account: str | None = None
    provider: str | None = None
    subject: str | None = None
    kind: str | None = None
    since: datetime | None = None

    def params(self) -> dict[str, Any]:
        found = {name: getattr(self, name) for name in ("account", "provider", "kind", "since")}
        found["subject"] = subject_of(self.provider, self.subject)
        return {name: value for name, value in found.items() if value is not None}


_CONDITIONS = {
    "account": "e.account_uuid = :account",
    "provider": "e.provider = :provider",
    "subject": "e.subject = :subject",
    "kind": "e.kind = :kind",
    "since": "e.at >= :since",
    "after": "e.seq > :after",
}


@functools.cache
def _listing(names: frozenset[str], newest_first: bool) -> str:
    where = " AND ".join(_CONDITIONS[name] for name in sorted(names)) or "1 = 1"
    order = "DESC" if newest_first else "ASC"
    return f"SELECT {_SELECT} FROM connection_events AS e WHERE {where} ORDER BY e.seq {order} LIMIT :limit"


_DELIVERY = (
    "d.seq, d.subject_key, d.status, d.attempts, d.next_attempt_at, d.deadline_at, d.last_attempt_at, d.last_error"
)
_FIRST_OF_SUBJECT = (
    "NOT EXISTS (SELECT 1 FROM event_deliveries AS ahead WHERE ahead.subject_key = d.subject_key "
    f"AND ahead.status = '{PENDING}' AND ahead.seq < d.seq)"
)
# Due: the first pending delivery of each subject whose time has come (a subject's events go in order).
DUE = (
    f"SELECT {_DELIVERY}, {_SELECT} FROM event_deliveries AS d JOIN connection_events AS e ON e.id = d.event_id "
    f"WHERE d.status = '{PENDING}' AND d.next_attempt_at <= :now AND {_FIRST_OF_SUBJECT} ORDER BY d.seq LIMIT :limit"
)
NEXT_DUE = (
    f"SELECT min(d.next_attempt_at) FROM event_deliveries AS d WHERE d.status = '{PENDING}' AND {_FIRST_OF_SUBJECT}"
)
FAILED_DELIVERIES = (
    f"SELECT {_DELIVERY}, {_SELECT} FROM event_deliveries AS d JOIN connection_events AS e ON e.id = d.event_id "
    f"WHERE d.status = '{FAILED}' ORDER BY d.seq"
)
DELIVERED = "DELETE FROM event_deliveries WHERE seq = :seq"
RETRY_LATER = (
    "UPDATE event_deliveries SET attempts = :attempts, next_attempt_at = :next, last_attempt_at = :now, "
    "last_error = :error WHERE seq = :seq"
)
# Giving up: the delivery, and any of its subject's queue that has waited out the window too.
GIVE_UP = (
    f"UPDATE event_deliveries SET status = '{FAILED}', last_attempt_at = :now, last_error = :error, "
    "attempts = CASE WHEN seq = :seq THEN attempts + 1 ELSE attempts END "
    f"WHERE seq = :seq OR (subject_key = :subject_key AND status = '{PENDING}' AND deadline_at <= :now)"
)
# The subject's next delivery keeps the backoff reached (only a success sends the queue at once).
CARRY_BACKOFF = (
    "UPDATE event_deliveries SET attempts = :attempts, next_attempt_at = :next WHERE seq = "
    f"(SELECT min(seq) FROM event_deliveries WHERE subject_key = :subject_key AND status = '{PENDING}')"
)
REQUEUE_FAILED = (
    f"UPDATE event_deliveries SET status = '{PENDING}', attempts = 0, next_attempt_at = :now, deadline_at = :deadline, "
    f"last_error = NULL WHERE status = '{FAILED}' AND (:all_failed OR event_id IN :ids) RETURNING event_id"
)
_SUBJECT_KEY = (
    "CASE WHEN e.subject IS NOT NULL THEN e.provider || ':' || e.subject "
    f"WHEN e.key IS NOT NULL THEN 'key:' || e.key ELSE '{NO_SUBJECT}' END"
)
# An event delivered already (its outbox row is gone) is queued again.
REQUEUE_DELIVERED = (
    "INSERT INTO event_deliveries (event_id, subject_key, status, attempts, next_attempt_at, deadline_at) "
    f"SELECT e.id, {_SUBJECT_KEY}, '{PENDING}', 0, :now, :deadline FROM connection_events AS e "
    "WHERE e.id IN :ids AND NOT EXISTS (SELECT 1 FROM event_deliveries AS d WHERE d.event_id = e.id) RETURNING event_id"
)
CLEAR_OUTBOX = "DELETE FROM event_deliveries"
PRUNE = (
    "DELETE FROM connection_events WHERE seq IN "
    "(SELECT seq FROM connection_events WHERE at < :before ORDER BY seq LIMIT :bite)"
)
NEWEST_SEQ = "SELECT coalesce(max(seq), 0) FROM connection_events"
# SQLite's AUTOINCREMENT counter: a restored file's must not go back (followers resume after a seq).
_SEQUENCE = "SELECT seq FROM sqlite_sequence WHERE name = 'connection_events'"
_RAISE_SEQUENCE = "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'connection_events'"
_START_SEQUENCE = "INSERT INTO sqlite_sequence (name, seq) SELECT 'connection_events', ? WHERE NOT EXISTS ({})"


class EventLog:
    def __init__(self, store: Writer, backend: Backend) -> None:
        self._store = store
        self._backend = backend

    async def list(
        self, filters: Filters = Filters(), *, after: int = 0, limit: int = PAGE_SIZE, newest_first: bool = False
    ) -> list[LoggedEvent]:
        params = {**filters.params(), "limit": limit}
        if after:
            params["after"] = after
        statement = _listing(frozenset(params) - {"limit"}, newest_first)
        return [LoggedEvent.of(row) for row in await self._backend.fetch(statement, params)]

    async def recent(self, account: str, limit: int = 10) -> list[LoggedEvent]:
        """The account's newest events, newest first (the merchant's "Recent activity")."""
        return await self.list(Filters(account=account), limit=limit, newest_first=True)

    async def newest_seq(self) -> int:
        return int((await self._backend.fetch(NEWEST_SEQ, {}))[0][0])

    # --- the outbox ------------------------------------------------------------------------------

    async def due(self, now: datetime, limit: int = 100) -> list[Delivery]:
        return [Delivery.of(row) for row in await self._backend.fetch(DUE, {"now": now, "limit": limit})]

    async def next_due(self) -> datetime | None:
        """When the earliest first-of-its-subject delivery is due (None: nothing pending)."""
        return sql.from_disk((await self._backend.fetch(NEXT_DUE, {}))[0][0])

    async def failed(self) -> list[Delivery]:
        return [Delivery.of(row) for row in await self._backend.fetch(FAILED_DELIVERIES, {})]

    async def delivered(self, delivery: Delivery) -> None:
        await self._store.write(Plan([Step(DELIVERED, [{"seq": delivery.seq}])]))

    async def retry_later(self, delivery: Delivery, *, now: datetime, next_at: datetime, error: str) -> None:
        row = {"seq": delivery.seq, "attempts": delivery.attempts + 1, "next": next_at, "now": now, "error": error}
        await self._store.write(Plan([Step(RETRY_LATER, [row])]))

    async def give_up(self, delivery: Delivery, *, now: datetime, next_at: datetime, error: str) -> None:
        """Mark it failed (and what of its subject has waited out the window too); the subject's next
        delivery goes at `next_at`, keeping the backoff."""
        subject = delivery.subject_key
        failed = {"seq": delivery.seq, "now": now, "error": error, "subject_key": subject}
        carry = {"attempts": delivery.attempts + 1, "next": next_at, "subject_key": subject}
        await self._store.write(Plan([Step(GIVE_UP, [failed]), Step(CARRY_BACKOFF, [carry])]))

    async def redeliver(self, ids: Sequence[str] = (), *, all_failed: bool = False, now: datetime) -> list[str]:
        """Queue events again (failed ones, or any by id): the ids queued."""
        params = {"ids": list(ids), "all_failed": all_failed, "now": now, "deadline": now + DELIVERY_WINDOW}
        steps = [Step(REQUEUE_FAILED, [params], returning=True)]
        if ids:
            steps.append(Step(REQUEUE_DELIVERED, [params], returning=True))
        queued = await self._store.write(Plan(steps))
        return [event_id for found in queued for event_id in found]

    async def clear_outbox(self) -> None:
        """No receiver is configured: nothing waits to be sent (a receiver set later starts from then)."""
        await self._store.write(Plan([Step(CLEAR_OUTBOX, [{}])]))

    # --- retention -------------------------------------------------------------------------------

    async def prune(self, older_than: timedelta, *, now: datetime) -> int:
        """Delete events (and their deliveries) older than the retention, a bite at a time."""
        (pruned,) = await self._store.write(
            Plan([Step(PRUNE + " RETURNING seq", [{"before": now - older_than, "bite": PRUNE_BITE}], returning=True)])
        )
        return len(pruned)


def sqlite_sequence(connection: sqlite3.Connection) -> int:
    """The highest seq a SQLite file ever gave an event (0 before any, or before revision 0008)."""
    try:
        row = connection.execute(_SEQUENCE).fetchone()
    except sqlite3.OperationalError:  # no sqlite_sequence yet
        return 0
    return int(row[0]) if row else 0


def keep_sequence(connection: sqlite3.Connection, at_least: int) -> None:
    """After `restore` replaced the file: new events get seqs past every one handed out before."""
    if at_least <= 0:
        return
    connection.execute(_RAISE_SEQUENCE, (at_least,))
    connection.execute(_START_SEQUENCE.format(_SEQUENCE), (at_least,))
