"""`salesbot import-db PATH`: copy another tokens.db (one the seed wrote, or ours) into this store.

The other file is opened read-only (`mode=ro`) and read in key order, a batch at a time. Each value
is decrypted with a ring made of our current keys, the key derived from the other database's
STATE_TOKEN_SECRET (the variable named by --secret-env, default our own STATE_TOKEN_SECRET), then
stored under our primary key as the store's upsert stores it (keeping the type, linking UUID entries to
accounts), a batch in a few statements (service/jobs/writing.py). Columns of ours that the other
file has (expiry, scopes, refresh token...) come along.

Before anything is written, the first row must decrypt: a wrong secret stops the run with a message
naming the variable, and nothing changes. Later rows that do not decrypt are reported by key and
skipped (exit 1). A row already stored with the same plaintext is "unchanged", so a run that was
interrupted simply runs again; a different value already stored is kept unless --overwrite.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.crypto import KeyRing, derive_seed_key
from service.db import sqlite_file
from service.errors import UndecryptableValue
from service.jobs.base import DEFAULT_BATCH_SIZE, JobError, call_hook
from service.jobs.import_env import ImportReport
from service.jobs.progress import Progress, Silent
from service.vault import SKIPPED, Outcome, TokenStore, TokenWrite, files

REQUIRED_COLUMNS = ("key", "value", "type")
# Our columns that come along when the other database has them; the rest is recomputed here.
COPIED_COLUMNS = (
    "account_uuid",
    "provider",
    "subject",
    "granted_by",
    "scopes",
    "expires_at",
    "refresh_expires_at",
    "name",
    "category",
    "tasks",
)
DATETIME_COLUMNS = {"expires_at", "refresh_expires_at"}


def source_ring(current_keys: Sequence[str], current_secret: str | None, source_secret: str) -> KeyRing:
    keys: list[bytes | str] = [*current_keys, derive_seed_key(source_secret)]
    if current_secret and current_secret != source_secret:
        keys.append(derive_seed_key(current_secret))
    return KeyRing(keys)


class SourceDatabase:
    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise JobError(f"{path} does not exist or is not a file; nothing was imported.")
        self.path = path
        try:
            self.connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
            has_tokens = files.has_tokens_table(self.connection)
        except sqlite3.DatabaseError:
            raise JobError(f"{path} is not an SQLite database; nothing was imported.") from None
        if not has_tokens:
            self.connection.close()
            raise JobError(f"{path} has no tokens table, so it is not a tokens.db; nothing was imported.")
        columns = files.token_columns(self.connection)
        if not set(REQUIRED_COLUMNS) <= columns:
            self.connection.close()
            raise JobError(f"{path}: its tokens table lacks the key, value and type columns; nothing was imported.")
        self.has_refresh = "refresh_token" in columns
        self.extra = [name for name in COPIED_COLUMNS if name in columns]

    def close(self) -> None:
        self.connection.close()

    def count(self) -> int:
        return files.count_tokens(self.connection)

    def _batch(self, after: str | None, size: int) -> list[dict[str, Any]]:
        names = [*REQUIRED_COLUMNS, *(["refresh_token"] if self.has_refresh else []), *self.extra]
        return files.token_batch(self.connection, names, after=after, size=size)

    async def batches(self, size: int):  # type: ignore[no-untyped-def]
        after: str | None = None
        while True:
            rows = await asyncio.to_thread(self._batch, after, size)
            if not rows:
                return
            yield rows
            after = rows[-1]["key"]


def _when(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _to_write(ring: KeyRing, row: dict[str, Any]) -> TokenWrite:
    """Decrypt one source row into a write; raises UndecryptableValue naming the key."""
    key = str(row["key"])
    value = ring.decrypt(str(row["value"]), key_name=key)
    metadata: dict[str, Any] = {}
    if row.get("refresh_token") is not None:
        metadata["refresh_token"] = ring.decrypt(str(row["refresh_token"]), key_name=f"{key} (refresh token)")
    for name in COPIED_COLUMNS:
        if row.get(name) is not None:
            metadata[name] = _when(row[name]) if name in DATETIME_COLUMNS else row[name]
    return TokenWrite(key, value, str(row["type"]), metadata)


def _open_source(path: Path, own: Path | None) -> SourceDatabase:
    if own is not None and own.exists() and path.exists() and own.resolve() == path.resolve():
        raise JobError(f"{path} is this store's own database; nothing to import.")
    return SourceDatabase(path)


async def import_db(
    store: TokenStore,
    path: Path,
    *,
    ring: KeyRing,
    secret_label: str,
    overwrite: bool = False,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    after_batch: Callable[[int], Any] | None = None,
) -> ImportReport:
    if batch_size < 1:
        raise JobError("--batch-size must be at least 1.", status=2)
    source = _open_source(path, sqlite_file(store.engine.url))
    try:
        report = ImportReport(dry_run=dry_run, keep_all=False)
        progress = progress or Silent()
        progress.total = source.count()
        first = True
        seen = 0
        async for rows in source.batches(batch_size):
            writes: list[TokenWrite] = []
            unreadable: list[Outcome] = []
            for row in rows:
                try:
                    writes.append(_to_write(ring, row))
                except UndecryptableValue:
                    if first:
                        raise JobError(
                            f"The first row of {path} ({row['key']!r}) cannot be decrypted with the secret in "
                            f"{secret_label} nor with the current keys: set {secret_label} to the "
                            "STATE_TOKEN_SECRET that database was written with. Nothing was imported."
                        ) from None
                    unreadable.append(Outcome(str(row["key"]), SKIPPED, f"unreadable with {secret_label}'s key"))
                first = False
            report.add(unreadable)
            report.add(await store.bulk.import_writes(writes, overwrite=overwrite, dry_run=dry_run))
            seen += len(rows)
            progress.update(len(rows))
            await call_hook(after_batch, seen)
        await report.record(store, "db")
        progress.finish(report.summary())
        return report
    finally:
        source.close()
