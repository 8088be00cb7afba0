"""`salesbot keys rotate`: re-encrypt every stored value under the primary key, while the service runs.

Rows are read in key order, a batch at a time, and re-encrypted outside any lock; each batch is then
written in one write transaction with a compare-and-swap per row:

    UPDATE tokens SET value = v.new, refresh_token = v.new_refresh FROM (VALUES ...) v
    WHERE tokens.key = v.key AND tokens.value = v.old AND tokens.refresh_token IS v.old_refresh

so a token the service wrote after we read it (already under the primary key, since the service
always encrypts with it) is never replaced by our copy of the older value. Such rows are re-read and
retried at the end. The plaintext never changes, only the ciphertext; `updated_at` is left alone
because the token itself did not change.

Resumable by construction: a row already under the primary key is skipped, so a run killed half way
and started again carries on, and a second run rewrites nothing. Rows no key can open are named and
left as they are; the run then ends with exit status 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from service.crypto import KeyRing
from service.errors import UndecryptableValue
from service.jobs.base import DEFAULT_BATCH_SIZE, RawRow, call_hook, count_rows, raw_batches
from service.jobs.progress import Progress, Silent
from service.store import TOKENS, TokenStore

RETRY_ROUNDS = 3


@dataclass
class RotateReport:
    dry_run: bool = False
    rows: int = 0
    already_current: int = 0
    rewritten: int = 0  # with --dry-run: rows that would be rewritten
    changed_meanwhile: int = 0  # the service rewrote them under the primary key while we worked
    unreadable: list[str] = field(default_factory=list)
    contended: list[str] = field(default_factory=list)  # still not current after the retries

    @property
    def ok(self) -> bool:
        return not self.unreadable and not self.contended

    def summary(self) -> str:
        verb = "would be rewritten" if self.dry_run else "rewritten"
        parts = [
            f"{self.rows:,} rows checked",
            f"{self.rewritten:,} rows {verb}",
            f"{self.already_current:,} already under the primary key",
        ]
        if self.changed_meanwhile:
            parts.append(f"{self.changed_meanwhile:,} rewritten by the service meanwhile")
        parts.append(f"{len(self.unreadable):,} unreadable")
        if self.contended:
            parts.append(f"{len(self.contended):,} kept changing (run again)")
        return ", ".join(parts) + "."


@dataclass(frozen=True)
class _Plan:
    key: str
    old_value: str
    new_value: str
    old_refresh: str | None
    new_refresh: str | None


def _plan(ring: KeyRing, row: RawRow, report: RotateReport) -> _Plan | None:
    value_current = ring.is_current(row.value)
    refresh_current = row.refresh_token is None or ring.is_current(row.refresh_token)
    if value_current and refresh_current:
        report.already_current += 1
        return None
    try:
        new_value = row.value if value_current else ring.rotate(row.value, key_name=row.key)
        new_refresh = row.refresh_token
        if row.refresh_token is not None and not refresh_current:
            new_refresh = ring.rotate(row.refresh_token, key_name=f"{row.key} (refresh token)")
    except UndecryptableValue:
        report.unreadable.append(row.key)
        return None
    return _Plan(row.key, row.value, new_value, row.refresh_token, new_refresh)


async def _write(store: TokenStore, plans: Sequence[_Plan]) -> list[str]:
    """Compare-and-swap the planned rows in one statement; return the keys whose stored value changed
    under us. One UPDATE ... FROM (VALUES ...) RETURNING per batch (SQLite >= 3.35 and PostgreSQL),
    so a batch costs one round trip, not one per row."""
    if not plans:
        return []
    same = "IS" if store.engine.dialect.name == "sqlite" else "IS NOT DISTINCT FROM"
    rows = ", ".join(
        f"(CAST(:k{n} AS TEXT), CAST(:o{n} AS TEXT), CAST(:n{n} AS TEXT), CAST(:ro{n} AS TEXT), CAST(:rn{n} AS TEXT))"
        for n in range(len(plans))
    )
    statement = text(
        f"WITH v(k, o, n, ro, rn) AS (VALUES {rows}) "
        "UPDATE tokens SET value = v.n, refresh_token = v.rn FROM v "
        f"WHERE tokens.key = v.k AND tokens.value = v.o AND tokens.refresh_token {same} v.ro "
        "RETURNING tokens.key"
    )
    params: dict[str, str | None] = {}
    for n, plan in enumerate(plans):
        params.update(
            {f"k{n}": plan.key, f"o{n}": plan.old_value, f"n{n}": plan.new_value}
            | {f"ro{n}": plan.old_refresh, f"rn{n}": plan.new_refresh}
        )
    async with store.write_transaction() as connection:
        written = set((await connection.execute(statement, params)).scalars())
    return [plan.key for plan in plans if plan.key not in written]


async def rotate_keys(
    store: TokenStore,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    progress: Progress | None = None,
    after_batch: Callable[[int], Any] | None = None,
    before_write: Callable[[list[str]], Any] | None = None,
) -> RotateReport:
    """Move every row to the primary key. `after_batch(rows_seen)` runs after each committed batch and
    `before_write(keys)` between a batch's read and its write (hooks for tests and the benchmark)."""
    report = RotateReport(dry_run=dry_run)
    progress = progress or Silent()
    progress.total = await count_rows(store)
    ring = store.keyring
    retry: list[str] = []
    async for batch in raw_batches(store, batch_size):
        report.rows += len(batch)
        plans = [plan for row in batch if (plan := _plan(ring, row, report)) is not None]
        if dry_run:
            report.rewritten += len(plans)
        else:
            if before_write is not None:
                keys = [plan.key for plan in plans]
                await call_hook(lambda _, keys=keys: before_write(keys), 0)
            missed = await _write(store, plans)
            report.rewritten += len(plans) - len(missed)
            retry.extend(missed)
        progress.update(len(batch))
        await call_hook(after_batch, report.rows)

    for _ in range(RETRY_ROUNDS):
        if not retry:
            break
        retry = await _retry(store, retry, report)
    report.contended = sorted(retry)
    progress.finish(report.summary())
    return report


async def _retry(store: TokenStore, keys: list[str], report: RotateReport) -> list[str]:
    """Re-read rows whose compare-and-swap missed; most are now under the primary key already."""
    missed: list[str] = []
    for start in range(0, len(keys), DEFAULT_BATCH_SIZE):
        chunk = keys[start : start + DEFAULT_BATCH_SIZE]
        rows = [row async for batch in raw_batches(store, len(chunk), where=TOKENS.c.key.in_(chunk)) for row in batch]
        scratch = RotateReport()
        plans = [plan for row in rows if (plan := _plan(store.keyring, row, scratch)) is not None]
        report.changed_meanwhile += scratch.already_current + (len(chunk) - len(rows))  # rewritten or deleted
        report.unreadable.extend(scratch.unreadable)
        again = await _write(store, plans)
        report.rewritten += len(plans) - len(again)
        missed.extend(again)
    return missed
