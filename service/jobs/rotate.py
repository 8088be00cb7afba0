"""`salesbot keys rotate`: re-encrypt every stored value under the primary key, while the service runs.

Rows are read in key order, a batch at a time, and re-encrypted outside any lock; each batch is then
written in one write transaction with a compare-and-swap per row (the stored ciphertexts must still be
the ones read: service/vault/bulk.py), so a token the service wrote after we read it (already under the
primary key, since the service always encrypts with it) is never replaced by our copy of the older
value. Such rows are re-read and retried at the end. The plaintext never changes, only the
ciphertext; `updated_at` is left alone because the token itself did not change.

Resumable by construction: a row already under the primary key is skipped, so a run killed half way
and started again carries on, and a second run rewrites nothing. Rows no key can open are named and
left as they are; the run then ends with exit status 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.jobs.base import DEFAULT_BATCH_SIZE, call_hook, check_batch_size
from service.jobs.progress import Progress, Silent
from service.vault import Event, Rotation, Swap, TokenStore, events

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
    check_batch_size(batch_size)
    progress = progress or Silent()
    progress.total = await store.bulk.count()
    retry: list[str] = []
    async for batch in store.bulk.batches(batch_size):
        report.rows += len(batch)
        swaps = _found(store.bulk.rotation(batch), report)
        if dry_run:
            report.rewritten += len(swaps)
        else:
            if before_write is not None:
                keys = [swap.key for swap in swaps]
                await call_hook(lambda _, keys=keys: before_write(keys), 0)
            swapped = await store.bulk.swap(swaps)
            report.rewritten += len(swapped)
            retry.extend(swap.key for swap in swaps if swap.key not in swapped)
        progress.update(len(batch))
        await call_hook(after_batch, report.rows)

    for _ in range(RETRY_ROUNDS):
        if not retry:
            break
        retry = await _retry(store, retry, report)
    report.contended = sorted(retry)
    if report.rewritten:
        # One summary for the job (DESIGN.md, "The event log"); fingerprints change from here on.
        detail = {"rows": report.rows, "rewritten": report.rewritten, "unreadable": len(report.unreadable)}
        await store.record([Event(events.KEYS_ROTATED, detail=detail)])
    progress.finish(report.summary())
    return report


def _found(rotation: Rotation, report: RotateReport) -> list[Swap]:
    report.already_current += rotation.current
    report.unreadable.extend(rotation.unreadable)
    return rotation.swaps


async def _retry(store: TokenStore, keys: list[str], report: RotateReport) -> list[str]:
    """Re-read rows whose compare-and-swap missed; most are now under the primary key already."""
    missed: list[str] = []
    for start in range(0, len(keys), DEFAULT_BATCH_SIZE):
        chunk = keys[start : start + DEFAULT_BATCH_SIZE]
        rows = await store.bulk.rows(chunk)
        rotation = store.bulk.rotation(rows)
        # Rows now under the primary key, or deleted, were rewritten by the service meanwhile.
        report.changed_meanwhile += rotation.current + (len(chunk) - len(rows))
        report.unreadable.extend(rotation.unreadable)
        swapped = await store.bulk.swap(rotation.swaps)
        report.rewritten += len(swapped)
        missed.extend(swap.key for swap in rotation.swaps if swap.key not in swapped)
    return missed
