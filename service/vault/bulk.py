"""What operator jobs do to the whole table, a batch at a time (DESIGN.md, "The vault").

Reads walk `tokens` in key order with keyset pagination, each batch its own short read, so memory
stays bounded and no read transaction is held across a run. Writes are compare-and-swaps or guarded
upserts planned by service/vault/planner.py, so a token the service rewrites meanwhile is never
replaced by a job's copy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from service.crypto import KeyRing
from service.errors import UndecryptableValue
from service.models import utcnow
from service.vault import sql
from service.vault.planner import ABSENT, Plan, Swap, plan_swaps, plan_writes
from service.vault.schema import TokenWrite, write_problem
from service.vault.writes import ReadWrite

if TYPE_CHECKING:
    from service.vault.ports import Backend, Writer

IMPORTED, REPLACED, UNCHANGED, SKIPPED = "imported", "replaced", "unchanged", "skipped"
WOULD = {IMPORTED: "would import", REPLACED: "would replace"}


@dataclass(frozen=True)
class StoredRow:
    """A row as stored: ciphertexts, never decrypted until asked."""

    key: str
    type: str
    value: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    provider: str | None = None
    subject: str | None = None
    expires_at: datetime | None = None
    health: str | None = None  # the stored verdict (vault/health.py), None when nothing is wrong


@dataclass(frozen=True)
class Outcome:
    key: str
    status: str  # imported | replaced | unchanged | skipped
    reason: str = ""

    def line(self, dry_run: bool) -> str:
        status = WOULD.get(self.status, self.status) if dry_run else self.status
        return f"{status:<14} {self.key}" + (f"  ({self.reason})" if self.reason else "")


@dataclass
class Rotation:
    """What `keys rotate` finds in a batch: rows already under the primary key, rows no key opens, and
    the new ciphertexts for the rest."""

    current: int = 0
    unreadable: list[str] = field(default_factory=list)
    swaps: list[Swap] = field(default_factory=list)


def _row(values: Sequence[Any]) -> StoredRow:
    key, type_, value, refresh_token, provider, subject, expires_at, health = values
    return StoredRow(key, type_, value, refresh_token, provider, subject, sql.from_disk(expires_at), health)


class Bulk:
    def __init__(self, store: Writer, backend: Backend, ring: KeyRing) -> None:
        self._store = store
        self._backend = backend
        self._ring = ring

    async def count(self) -> int:
        return int((await self._backend.scan(sql.COUNT, {}))[0][0])

    async def batches(self, size: int) -> AsyncIterator[list[StoredRow]]:
        after = ""
        while True:
            rows = [_row(row) for row in await self._backend.scan(sql.RAW_BATCH, {"after": after, "limit": size})]
            if not rows:
                return
            yield rows
            if len(rows) < size:
                return
            after = rows[-1].key

    async def rows(self, keys: Sequence[str]) -> list[StoredRow]:
        found = await self._backend.fetch(sql.RAW_ROWS, {"keys": list(keys)})
        return sorted((_row(row) for row in found), key=lambda row: row.key)

    def decrypt(self, row: StoredRow) -> str:
        """The row's plaintext; raises UndecryptableValue (naming the key) when no key opens it or its
        refresh token."""
        if row.refresh_token is not None:
            self._ring.decrypt(row.refresh_token, key_name=f"{row.key} (refresh token)")
        return self._ring.decrypt(row.value, key_name=row.key)

    def rotation(self, rows: Sequence[StoredRow]) -> Rotation:
        """Re-encrypt, under the primary key, every row not under it yet (nothing is written here)."""
        rotation = Rotation()
        ring = self._ring
        for row in rows:
            value_current = ring.is_current(row.value)
            refresh_current = row.refresh_token is None or ring.is_current(row.refresh_token)
            if value_current and refresh_current:
                rotation.current += 1
                continue
            try:
                new = row.value if value_current else ring.rotate(row.value, key_name=row.key)
                new_refresh = row.refresh_token
                if row.refresh_token is not None and not refresh_current:
                    new_refresh = ring.rotate(row.refresh_token, key_name=f"{row.key} (refresh token)")
            except UndecryptableValue:
                rotation.unreadable.append(row.key)
                continue
            rotation.swaps.append(Swap(row.key, row.value, new, row.refresh_token, new_refresh))
        return rotation

    async def swap(self, swaps: Sequence[Swap]) -> set[str]:
        """Write new ciphertexts where the rows still hold the ones read; the keys swapped."""
        if not swaps:
            return set()
        (swapped,) = await self._store.write(plan_swaps(swaps))
        return set(swapped)

    async def import_writes(self, writes: Sequence[TokenWrite], *, overwrite: bool, dry_run: bool) -> list[Outcome]:
        """Store each write unless a different value is already there (or `overwrite`), in one transaction;
        written as the flows write (accounts linked), and a row written by someone else meanwhile is
        reported, never replaced."""
        outcomes: list[Outcome] = []
        valid: list[TokenWrite] = []
        for write in writes:
            problem = write_problem(write)
            if problem is None:
                valid.append(write)
            else:
                outcomes.append(Outcome(write.key, SKIPPED, problem))
        if not valid:
            return outcomes
        params = {"keys": [write.key for write in valid]}
        if dry_run:
            existing = dict(await self._backend.fetch(sql.CIPHERTEXTS, params))
            return outcomes + [self._decide(write, existing, overwrite) for write in valid]
        now = utcnow()

        def decide(found: list[list[Any]]) -> tuple[Plan, list[Outcome]]:
            existing = dict(found[0])
            decided = [(write, self._decide(write, existing, overwrite)) for write in valid]
            chosen = [write for write, outcome in decided if outcome.status in (IMPORTED, REPLACED)]
            # Guarded, so that a row written meanwhile (on PostgreSQL nothing locks a key that does
            # not exist yet) is reported instead of replaced.
            guards = {write.key: existing.get(write.key, ABSENT) for write in chosen}
            return plan_writes(chosen, ring=self._ring, now=now, guards=guards), [outcome for _, outcome in decided]

        decided = await self._store.read_write(ReadWrite([(sql.CIPHERTEXTS + " FOR UPDATE", params)], decide))
        written = set(decided.returned)
        for outcome in decided.result:
            if outcome.status in (IMPORTED, REPLACED) and outcome.key not in written:
                outcome = Outcome(outcome.key, SKIPPED, "written by someone else meanwhile; run again to compare")
            outcomes.append(outcome)
        return outcomes

    def _decide(self, write: TokenWrite, existing: dict[str, str], overwrite: bool) -> Outcome:
        if write.key not in existing:
            return Outcome(write.key, IMPORTED)
        try:
            stored = self._ring.decrypt(existing[write.key], key_name=write.key)
        except UndecryptableValue:
            if overwrite:
                return Outcome(write.key, REPLACED, "the stored value was unreadable")
            return Outcome(write.key, SKIPPED, "stored value unreadable with the current keys; --overwrite replaces it")
        if stored == write.value:
            return Outcome(write.key, UNCHANGED)
        if overwrite:
            return Outcome(write.key, REPLACED)
        return Outcome(write.key, SKIPPED, "a different value is already stored; --overwrite replaces it")
