"""`salesbot backup PATH` and `salesbot restore PATH --yes`, for the SQLite store.

Backup uses SQLite's online backup API, not a file copy: the source connection holds one read
transaction for the whole copy, so every page comes from the same WAL snapshot while the service
keeps writing (other writers append to the WAL and are never blocked), and the copy is consistent.
It is written to `PATH.partial` (created 0600, removed if a previous run was killed), switched from
WAL to a rollback journal (a single self-contained file: no -wal or -shm appears beside it when it is
opened), checked with `PRAGMA integrity_check`, and only then linked into place as PATH, so PATH either
does not exist or is a complete backup. An existing PATH is never overwritten.

Restore is offered because it is done the same safe way: the backup file is checked first (integrity,
a tokens table, values our keys can read), the current database is itself backed up beside it, and
the copy into the live file goes through the backup API, which takes SQLite's write lock, so the
service's connections see the old contents or the restored ones, never a torn file. It still discards
every token written since the backup (Shopify refresh tokens are single-use), hence --yes.

PostgreSQL: use pg_dump / pg_restore; these commands say so and exit 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.crypto import KeyRing
from service.db import BUSY_TIMEOUT_MS, sqlite_file
from service.errors import UndecryptableValue
from service.jobs.base import JobError
from service.jobs.progress import Progress, Silent
from service.vault import announce_replaced, change_version, files, keep_sequence, sqlite_sequence

PAGES_PER_STEP = 256
PG_MESSAGE = (
    "backup and restore work on the SQLite store only; for PostgreSQL use pg_dump (and pg_restore), "
    "which take consistent snapshots of a live database."
)


@dataclass(frozen=True)
class BackupReport:
    path: Path
    pages: int
    rows: int

    def summary(self) -> str:
        return f"wrote {self.path} ({self.pages:,} pages, {self.rows:,} token rows, integrity ok, mode 0600)."


def live_file(database_url: str) -> Path:
    path = sqlite_file(database_url)
    if path is None:
        raise JobError(PG_MESSAGE, status=2)
    if not path.is_file():
        raise JobError(f"The database {path} does not exist; nothing to back up.")
    return path


def _private_file(path: Path) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)


def _integrity(connection: sqlite3.Connection, label: str) -> None:
    result = [row[0] for row in connection.execute("PRAGMA integrity_check")]
    if result != ["ok"]:
        raise JobError(f"{label} fails PRAGMA integrity_check ({len(result)} problem(s)).")


def _copy(
    source: Path,
    target: Path,
    *,
    pages: int,
    on_step: Callable[[int, int], Any] | None,
) -> int:
    """Copy with the backup API from one snapshot of `source`; returns the page count."""
    src = sqlite3.connect(source, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    dst = sqlite3.connect(target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    total = 0
    try:
        src.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        dst.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # One read transaction across every step: a single snapshot, and no restart when others write.
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()

        def progress(status: int, remaining: int, count: int) -> None:
            nonlocal total
            del status
            total = count
            if on_step is not None:
                on_step(count - remaining, count)

        src.backup(dst, pages=pages, progress=progress, sleep=0)
        src.execute("COMMIT")
    finally:
        src.close()
        dst.close()
    return total


def _standalone(path: Path) -> None:
    """The copy carries the live file's WAL flag; a backup is one file, so give it a rollback journal."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=DELETE")
    finally:
        connection.close()


def _token_rows(path: Path) -> int:
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        _integrity(connection, str(path))
        return files.count_tokens(connection)
    except sqlite3.DatabaseError as error:
        raise JobError(f"{path} is not a usable tokens database ({type(error).__name__}).") from None
    finally:
        connection.close()


def _backup_sync(source: Path, target: Path, *, pages: int, on_step: Callable[[int, int], Any] | None) -> BackupReport:
    if target.exists():
        raise JobError(f"{target} already exists; not overwriting it (choose another path or remove it).")
    if not target.parent.is_dir():
        raise JobError(f"The directory {target.parent} does not exist.")
    partial = target.with_name(target.name + ".partial")
    leftovers = [partial, *(Path(f"{partial}{suffix}") for suffix in ("-journal", "-wal", "-shm"))]
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)  # ours, from a run that was killed
    _private_file(partial)
    try:
        count = _copy(source, partial, pages=pages, on_step=on_step)
        _standalone(partial)
        rows = _token_rows(partial)
        os.link(partial, target)  # fails rather than replace a PATH that appeared meanwhile
    except FileExistsError:
        raise JobError(f"{target} appeared while the backup ran; not overwriting it.") from None
    finally:
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)
    return BackupReport(target, count, rows)


async def backup(
    database_url: str,
    target: Path,
    *,
    pages: int = PAGES_PER_STEP,
    progress: Progress | None = None,
    on_step: Callable[[int, int], Any] | None = None,
) -> BackupReport:
    """`on_step(done_pages, total_pages)` runs in the copying thread after each step (tests block in it)."""
    source = live_file(database_url)
    progress = progress or Silent()
    progress.unit = "pages"
    done = 0

    def step(copied: int, total: int) -> None:
        nonlocal done
        progress.total = total
        progress.update(copied - done)
        done = copied
        if on_step is not None:
            on_step(copied, total)

    report = await asyncio.to_thread(_backup_sync, source, target, pages=pages, on_step=step)
    progress.finish(report.summary())
    return report


@dataclass(frozen=True)
class RestoreReport:
    restored_from: Path
    previous_saved_to: Path
    rows: int

    def summary(self) -> str:
        return (
            f"restored {self.rows:,} token rows from {self.restored_from}; "
            f"the database as it was is saved in {self.previous_saved_to}."
        )


def _check_readable(path: Path, ring: KeyRing, sample: int = 50) -> None:
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = files.first_values(connection, sample)
    finally:
        connection.close()
    for key, value in rows:
        if not _opens(ring, value):
            raise JobError(
                f"{path}: the row {key!r} cannot be decrypted with the current keys; restoring it would leave "
                "unreadable tokens. Nothing was changed."
            )


def _opens(ring: KeyRing, value: str) -> bool:
    try:
        ring.decrypt(value)
    except UndecryptableValue:
        return False
    return True


def _check_revision(path: Path) -> None:
    from service.migrate import head_revision

    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:
        row = None
    finally:
        connection.close()
    head = head_revision()
    if row is None or row[0] != head:
        raise JobError(
            f"{path} is at schema revision {row[0] if row else 'none'} and this code needs {head}: run "
            "`salesbot migrate` on a copy of it (DATABASE_URL pointing at the copy), then restore the copy. "
            "Nothing was changed."
        )


def _counters(path: Path) -> tuple[int, int]:
    """The live file's change-log version and event sequence, before a restore replaces it."""
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        return change_version(connection), sqlite_sequence(connection)
    finally:
        connection.close()


def _announce_restore(path: Path, before: int, events_before: int) -> None:
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        with contextlib.suppress(sqlite3.OperationalError):  # a schema without the change log
            announce_replaced(connection, before)
        with contextlib.suppress(sqlite3.OperationalError):  # a schema without the event log
            keep_sequence(connection, events_before)
    finally:
        connection.close()


def _check_restore_source(source: Path, live: Path) -> None:
    if not source.is_file():
        raise JobError(f"{source} does not exist; nothing was changed.")
    if source.resolve() == live.resolve():
        raise JobError(f"{source} is the live database itself; nothing was changed.")


async def restore(
    database_url: str, source: Path, *, ring: KeyRing, confirmed: bool, progress: Progress | None = None
) -> RestoreReport:
    live = live_file(database_url)
    if not confirmed:
        raise JobError(
            "restore replaces every token in the live database with the backup's, losing whatever was written "
            "since (a refreshed Shopify token cannot be recovered): pass --yes to go ahead.",
            status=2,
        )
    _check_restore_source(source, live)
    rows = await asyncio.to_thread(_token_rows, source)
    await asyncio.to_thread(_check_revision, source)
    await asyncio.to_thread(_check_readable, source, ring)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    saved = live.with_name(f"{live.name}.before-restore-{stamp}")
    await backup(database_url, saved)
    progress = progress or Silent()
    progress.unit = "pages"

    def copy_in() -> None:
        _copy(source, live, pages=-1, on_step=None)

    with contextlib.suppress(FileNotFoundError):
        os.chmod(live, 0o600)
    before, events_before = await asyncio.to_thread(_counters, live)
    await asyncio.to_thread(copy_in)
    await asyncio.to_thread(_announce_restore, live, before, events_before)
    report = RestoreReport(source, saved, rows)
    progress.finish(report.summary())
    return report
