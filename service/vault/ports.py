"""What the store's parts (bulk jobs, verdicts, the event log, Shopify refreshes) need from the store.

Each part is handed the store when the store is built, but names it only by one of these protocols, so
store.py imports its parts and no part imports store.py back (DESIGN.md, "The vault"). Reads go to the
backend directly; every write goes through the store's one writer (`Writer`), which keeps the cache,
the event log and the change notifications in step with what was committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from service.vault.events import Actor, Event, Recorder
from service.vault.planner import Plan
from service.vault.postgres import PostgresBackend
from service.vault.sqlite import SQLiteBackend
from service.vault.writes import Decided, ReadWrite

Backend = SQLiteBackend | PostgresBackend


class Writer(Protocol):
    """The store's writer: a plan (with the events it records) or a read-then-write, one transaction each."""

    async def write(self, plan: Plan, *, events: Sequence[Event] = (), by: Actor | None = None) -> list[list[Any]]: ...

    async def read_write(self, unit: ReadWrite) -> Decided: ...


class RecordingWriter(Writer, Protocol):
    """A writer whose recorder builds the events a change writes (fingerprints under the store's key)."""

    recorder: Recorder
