"""The event log's writing side: what happened to a connection, who did it, and the steps that record
it in the same transaction as the change (DESIGN.md, "The event log").

A change plans its events with itself: `Recorder.record(plan, events)` puts the event rows, and one
outbox row each for the webhook, in the plan's closing steps, which the writer runs last in the same
transaction (service/vault/planner.py). A change that rolls back has no event; a committed one always
has. On PostgreSQL those steps first take a transaction lock, so events commit in `seq` order across
instances and a follower that resumes after a seq misses none. Never a token in any column: the
`fingerprint` is a keyed digest (KeyRing.fingerprint).
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import os
import re
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from service import keys
from service.crypto import KeyRing
from service.errors import InvalidShop, UndecryptableValue
from service.events import (  # noqa: F401  (the kinds and roles, for the vault's callers)
    ACTORS,
    BOT,
    CLI,
    CONNECTED,
    DATA_DELETED,
    DEAUTHORIZED,
    DISCONNECTED,
    HEALTH_CHANGED,
    IMPORTED,
    KEYS_ROTATED,
    KINDS,
    MARKED_DEAD,
    RECONNECTED,
    RECOVERED,
    REDACTED,
    REFRESH_FAILED,
    REFRESHED,
    RESTORED,
    SWEEP,
    TOKEN_DELETED,
    TOKEN_SET,
    UNINSTALLED,
    WEB,
    WEBHOOK,
)
from service.models import utcnow
from service.providers.shopify import normalize_shop
from service.vault import sql
from service.vault.health import GONE, OK
from service.vault.planner import Plan, Step

# The health a connection is left in by the events that say it by their kind alone; health events
# (health_changed, marked_dead, refresh_failed) carry the verdict's. Reason codes are vault/health.py's.
HEALTH_AFTER = {
    CONNECTED: OK,
    RECONNECTED: OK,
    REFRESHED: OK,
    RECOVERED: OK,
    DISCONNECTED: GONE,
    UNINSTALLED: GONE,
    REDACTED: GONE,
    DEAUTHORIZED: GONE,
    DATA_DELETED: GONE,
}

# A webhook delivery is retried for this long after its event, then marked failed.
DELIVERY_WINDOW = timedelta(hours=24)
PENDING, FAILED = "pending", "failed"
NO_SUBJECT = "-"  # the outbox queue of events about no connection (operator jobs)
_LOCK = "salesbot connection_events"


@dataclass(frozen=True)
class Actor:
    role: str  # one of ACTORS
    os_user: str | None = None  # the operator, for the CLI

    @classmethod
    def of(cls, role: str) -> Actor:
        if role not in ACTORS:
            raise ValueError(f"an actor is one of {', '.join(ACTORS)}")
        return cls(role, _os_user() if role == CLI else None)


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return f"uid {os.getuid()}"


@functools.cache
def _host() -> str:
    return socket.gethostname()


def instance() -> str:
    """This process, as events name it: host and pid (a worker of `serve --workers`, a bot, a command)."""
    return f"{_host()}:{os.getpid()}"


@dataclass(frozen=True)
class Event:
    """One thing that happened, as a change plans it. Whatever it leaves out of account and name is read
    from the token row `key` names when the event is written; provider and subject come from the key."""

    kind: str
    key: str | None = None
    account: str | None = None
    provider: str | None = None
    subject: str | None = None
    name: str | None = None
    reason: str | None = None
    health: str | None = None  # vault/health.py's state after it (default: HEALTH_AFTER's, by kind)
    detail: Mapping[str, Any] | None = None  # a job's counts
    token: str | None = field(default=None, repr=False)  # only ever fingerprinted, never stored
    fingerprint: str | None = None  # when the caller computed it already


@functools.lru_cache(maxsize=4096)  # a shop's domain, normalised once per shop rather than per event
def subject_of(provider: str | None, subject: str | None) -> str | None:
    """The subject as events name it: a shop by its domain (rows and keys may hold the bare name)."""
    if provider == keys.SHOPIFY and subject:
        try:
            return normalize_shop(subject)
        except InvalidShop:
            return subject
    return subject


# Every event's row, and its outbox row. Account and name default to the token row's, read at the end
# of the transaction (a row deleted in it is gone by then: deletions give them explicitly).
INSERT_EVENT = (
    "INSERT INTO connection_events (id, at, kind, key, account_uuid, provider, subject, name, actor, instance, "
    "os_user, reason, health, fingerprint, detail) VALUES (:id, :at, :kind, :key, "
    "coalesce(:account, (SELECT account_uuid FROM tokens WHERE key = :key)), :provider, :subject, "
    "coalesce(:name, (SELECT name FROM tokens WHERE key = :key)), :actor, :instance, :os_user, :reason, :health, "
    ":fingerprint, :detail)"
)
INSERT_DELIVERY = (
    "INSERT INTO event_deliveries (event_id, subject_key, status, attempts, next_attempt_at, deadline_at) "
    f"VALUES (:id, :subject_key, '{PENDING}', 0, :at, :deadline)"
)
# PostgreSQL: the lock, the event and its outbox row as one statement, one round trip rather than three.
# The event's row is selected from the lock's, so its seq is drawn only once the lock is held.
_EVENT_COLUMNS = (
    "id, at, kind, key, account_uuid, provider, subject, name, actor, instance, os_user, reason, health, "
    "fingerprint, detail"
)
_LOCKED = "locked AS (SELECT pg_advisory_xact_lock(hashtextextended(:lock, 0))"  # ")" or " FROM ...)"
_DELIVERED = (
    "INSERT INTO event_deliveries (event_id, subject_key, status, attempts, next_attempt_at, deadline_at) "
    f"SELECT event.id, :subject_key, '{PENDING}', 0, CAST(:at AS timestamp), CAST(:deadline AS timestamp) FROM event"
)


def _event(account: str, name: str, sources: str) -> str:
    return (
        f"event AS (INSERT INTO connection_events ({_EVENT_COLUMNS}) SELECT :id, CAST(:at AS timestamp), :kind, "
        f":key, {account}, :provider, :subject, {name}, :actor, :instance, :os_user, :reason, :health, "
        f":fingerprint, :detail FROM {sources} RETURNING id)"
    )


LOG_EVENT = (
    f"WITH {_LOCKED}), "
    + _event(
        "coalesce(:account, (SELECT account_uuid FROM tokens WHERE key = :key))",
        "coalesce(:name, (SELECT name FROM tokens WHERE key = :key))",
        "locked",
    )
    + f" {_DELIVERED}"
)
WRITTEN_PREFIX = "ev_"  # a fused statement's event parameters: ev_key, ev_account ... beside the write's


@functools.cache
def write_and_log(upsert: str) -> str:
    """PostgreSQL: one unguarded upsert of one row and the event of that row's key in one statement
    (one round trip; in autocommit, one commit). The event's account and name are the row's as written.
    The lock is selected from the written row: taken only after the row is, as in a transaction whose
    closing steps come last (holding it while waiting for a row's lock could deadlock)."""
    event = (
        f"WITH written AS ({upsert} RETURNING account_uuid, name), {_LOCKED} FROM written), "
        + _event("coalesce(:account, written.account_uuid)", "coalesce(:name, written.name)", "written, locked")
        + f" {_DELIVERED}"
    )
    # The event's parameters renamed so that they never meet the write's (both have a key, a name ...).
    head, _, rest = event.partition(" RETURNING account_uuid, name), ")
    rest = re.sub(r"(?<![:\w]):(\w+)", rf":{WRITTEN_PREFIX}\1", rest)
    return f"{head} RETURNING account_uuid, name), {rest}"


# Erasure (shop/redact, Facebook data deletion): every earlier event of these subjects.
FORGET_SUBJECTS = "DELETE FROM connection_events WHERE provider = :provider AND subject IN :subjects"


class Recorder:
    """Turns events into the closing steps of the plan that makes the change; `by` is the default actor
    (the role the store was opened for), overridden per call (a webhook, the sweep)."""

    def __init__(self, ring: KeyRing, by: Actor) -> None:
        self.ring = ring
        self.by = by

    def record(
        self, plan: Plan, events: Iterable[Event], *, by: Actor | None = None, now: datetime | None = None
    ) -> Plan:
        plan.closing.extend(self.steps(events, by=by, now=now))
        return plan

    def steps(self, events: Iterable[Event], *, by: Actor | None = None, now: datetime | None = None) -> list[Step]:
        rows = [self._row(event, by or self.by, now or utcnow()) for event in events]
        if not rows:
            return []
        for row in rows:  # one row of parameters serves every step below
            row.update(lock=_LOCK, subject_key=_subject_key(row), deadline=row["at"] + DELIVERY_WINDOW)
        return [
            Step(LOG_EVENT, rows, dialect=sql.POSTGRES),
            Step(INSERT_EVENT, rows, dialect=sql.SQLITE),
            Step(INSERT_DELIVERY, rows, dialect=sql.SQLITE),
        ]

    def fingerprint(self, token: str | None) -> str | None:
        return None if token is None else self.ring.fingerprint(token)

    def _row(self, event: Event, by: Actor, now: datetime) -> dict[str, Any]:
        provider, subject = event.provider, event.subject
        info = keys.describe_key(event.key) if event.key else None
        if info is not None:
            provider = provider or info.provider
            subject = subject or info.subject
        return {
            "id": str(uuid.uuid4()),
            "at": now,
            "kind": event.kind,
            "key": event.key,
            "account": event.account,
            "provider": provider,
            "subject": subject_of(provider, subject),
            "name": event.name,
            "actor": by.role,
            "instance": instance(),
            "os_user": by.os_user,
            "reason": event.reason,
            "health": event.health or HEALTH_AFTER.get(event.kind),
            "fingerprint": event.fingerprint or self.fingerprint(event.token),
            "detail": None if event.detail is None else json.dumps(event.detail, sort_keys=True),
        }


def _subject_key(row: Mapping[str, Any]) -> str:
    if row["subject"]:
        return f"{row['provider']}:{row['subject']}"
    return f"key:{row['key']}" if row["key"] else NO_SUBJECT


def forget_subjects(provider: str, subjects: Sequence[str]) -> Step:
    return Step(FORGET_SUBJECTS, [{"provider": provider, "subjects": [subject_of(provider, s) for s in subjects]}])


@dataclass(frozen=True)
class StoredRow:
    """A token row as sql.EVENT_ROWS reads it, before a change that deletes or marks it."""

    key: str
    type: str
    value: str = field(repr=False)  # ciphertext
    account: str | None
    name: str | None
    updated_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def of(cls, row: Sequence[Any]) -> StoredRow:
        key, type_, value, account, name, updated_at, expires_at = row
        return cls(key, type_, value, account, name, sql.from_disk(updated_at), sql.from_disk(expires_at))


def about_rows(
    kind: str, rows: Iterable[StoredRow], ring: KeyRing, *, reason: str | None = None, erased: bool = False
) -> list[Event]:
    """One event per connection these rows belong to (a token and its link are one), with the account,
    name and the token's fingerprint as they were. erased: the subject's data is gone, so is its name."""
    grouped: dict[tuple[str | None, str], list[StoredRow]] = {}
    for row in rows:
        info = keys.describe_key(row.key)
        group = (info.provider, subject_of(info.provider, info.subject) or "") if info else (None, row.key)
        grouped.setdefault(group, []).append(row)
    events = []
    for (provider, subject), members in grouped.items():
        token = next((row for row in members if row.type == "token"), None)
        account = next((row.account for row in members if row.account), None)
        fingerprint = None
        if token is not None and not erased:
            # A value no key opens: the event still says what happened, only not which token it was.
            with contextlib.suppress(UndecryptableValue):
                fingerprint = ring.fingerprint(ring.decrypt(token.value))
        name = None if erased else next((row.name for row in members if row.name), None)
        key = (token or members[0]).key
        events.append(
            Event(
                kind,
                key=key,
                account=account,
                provider=provider,
                subject=subject if provider else None,
                name=name,
                reason=reason,
                fingerprint=fingerprint,
            )
        )
    return events
