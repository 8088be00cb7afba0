"""What waits in the writer's queue: a planned write, a read-then-write, or a job on other tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from service.vault.cache import Ticket
from service.vault.planner import Plan

# A function of a synchronous Connection, run inside a write transaction, for the service's tables
# outside the vault (OAuth state, webhook bookkeeping). It must touch the database only through it.
Job = Callable[[Connection], Any]


@dataclass(frozen=True)
class Write:
    plan: Plan
    ticket: Ticket  # the cache entries the plan fills, reserved before it was queued


Read = tuple[str, Mapping[str, Any]]  # a statement of service/vault/sql.py and its parameters


@dataclass(frozen=True)
class ReadWrite:
    """Read rows, decide, write: in one transaction, so nothing changes between the read and the write.

    `decide` is a plain function of the rows each read returned (it runs in the writer, off the event
    loop on SQLite) returning the plan to run and the caller's result. A read may end in FOR UPDATE
    (dropped on SQLite, whose write transaction holds the lock already); `locks` are advisory locks
    PostgreSQL takes first, for keys that may not exist yet (two flows connecting one new shop queue)."""

    reads: Sequence[Read]
    decide: Callable[[list[list[Any]]], tuple[Plan, Any]]
    locks: Sequence[str] = field(default_factory=tuple)
    # Cache entries the plan fills when they are known before the read (a deletion: every key absent).
    entries: Mapping[str, None] = field(default_factory=dict)
    ticket: Ticket | None = None  # reserved for `entries` by the store before the unit is queued


@dataclass(frozen=True)
class Decided:
    """What a ReadWrite came to: `decide`'s result, and the keys its plan's returning steps returned."""

    result: Any
    returned: list[Any]


Unit = Write | ReadWrite | Job
