"""`salesbot import-env`: store the tokens the seed's chapters 1-2 kept in environment variables.

Sources: the process environment, plus a .env file (`--env-file PATH`, else the settings' own .env
when it exists). Only names in the seed's vocabulary are taken: FACEBOOK_ACCESS_TOKEN_{page_id},
SHOPIFY_ACCESS_TOKEN_{shop_key}, PAGE_UUID_{page_id}, USER_UUID_{shop_key},
FACEBOOK_USER_ACCESS_TOKEN_{user_id}, and the seed's bare FACEBOOK_USER_ACCESS_TOKEN.

Decisions:
- The bare FACEBOOK_USER_ACCESS_TOKEN is imported as-is under its seed key (provider "facebook"), with
  a warning: it is not tied to any Facebook user or account, and the next Facebook login writes a
  per-user key beside it. Deleting it afterwards is left to the operator.
- The environment has no timestamps, so any existing row with a different value counts as newer:
  it is skipped (and the run exits 1) unless --overwrite. The same value is "unchanged".
- A name present in both the environment and the file with different values is skipped: we cannot
  tell which one is current.
- `*_UUID_*` values must be UUIDs; they are stored with type "uuid" and linked to their account, and
  the token beside them too, by the store's own upsert.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import keys, settings
from service.jobs.base import DEFAULT_BATCH_SIZE, JobError, call_hook
from service.jobs.progress import Progress, Silent
from service.vault import IMPORTED, REPLACED, SKIPPED, UNCHANGED, Event, Outcome, TokenWrite, events, rows

BARE_USER_TOKEN_WARNING = (
    "FACEBOOK_USER_ACCESS_TOKEN is the seed's one global user token: imported as-is, but it is not tied "
    "to a Facebook user or an account (the next Facebook login stores a per-user key)."
)


def read_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise JobError(f"The env file {path} does not exist; nothing was imported.")
    return settings.read_env_file(path)  # the settings' own reader: one .env syntax everywhere


def in_vocabulary(name: str) -> bool:
    return name == keys.SEED_FACEBOOK_USER_TOKEN or keys.describe_key(name) is not None


@dataclass
class ImportReport:
    dry_run: bool = False
    keep_all: bool = True  # False: remember only skipped and replaced keys (100k-row imports)
    outcomes: list[Outcome] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    def add(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            self.counts[outcome.status] += 1
            if self.keep_all or outcome.status in (SKIPPED, REPLACED):
                self.outcomes.append(outcome)

    def count(self, status: str) -> int:
        return self.counts[status]

    async def record(self, store: Any, source: str) -> None:
        """The job's one summary event (`imported`), when it wrote anything (DESIGN.md, "The event log")."""
        if self.dry_run or not (self.count(IMPORTED) or self.count(REPLACED)):
            return
        counts = {status: self.count(status) for status in (IMPORTED, REPLACED, UNCHANGED, SKIPPED)}
        await store.record([Event(events.IMPORTED, detail={"source": source, **counts})])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        return self.count(SKIPPED) == 0

    def summary(self) -> str:
        imported = "would import" if self.dry_run else "imported"
        replaced = "would replace" if self.dry_run else "replaced"
        return (
            f"{self.total:,} keys: {self.count(IMPORTED):,} {imported}, {self.count(REPLACED):,} {replaced}, "
            f"{self.count(UNCHANGED):,} unchanged, {self.count(SKIPPED):,} skipped."
        )


def collect(
    environ: Mapping[str, str], file_values: Mapping[str, str], file_label: str
) -> tuple[list[TokenWrite], list[Outcome]]:
    """The writes to attempt, and the entries refused before reaching the store."""
    names = sorted({name for name in (*environ, *file_values) if in_vocabulary(name)})
    writes: list[TokenWrite] = []
    refused: list[Outcome] = []
    for name in names:
        in_env, in_file = environ.get(name), file_values.get(name)
        if in_env is not None and in_file is not None and in_env.strip() != in_file.strip():
            refused.append(Outcome(name, SKIPPED, f"the environment and {file_label} hold different values"))
            continue
        value = (in_env if in_env is not None else in_file or "").strip()
        if not value:
            refused.append(Outcome(name, SKIPPED, "empty value"))
            continue
        write = rows.from_environment(name, value)
        if write.type == "uuid" and not _is_uuid(value):
            refused.append(Outcome(name, SKIPPED, "not a UUID"))
            continue
        writes.append(write)
    # UUID entries first: a token stored after its UUID entry joins the account at once.
    writes.sort(key=lambda write: (write.type != "uuid", write.key))
    return writes, refused


async def import_env(
    store: Any,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    after_batch: Callable[[int], Any] | None = None,
) -> ImportReport:
    environ = os.environ if environ is None else environ
    file_values: dict[str, str] = {}
    if env_file is not None:
        file_values = read_env_file(env_file)
    writes, refused = collect(environ, file_values, str(env_file) if env_file is not None else "the env file")
    report = ImportReport(dry_run=dry_run)
    report.add(refused)
    if any(write.key == keys.SEED_FACEBOOK_USER_TOKEN for write in writes):
        report.warnings.append(BARE_USER_TOKEN_WARNING)
    progress = progress or Silent()
    progress.total = len(writes)
    done = 0
    for start in range(0, len(writes), batch_size):
        batch = writes[start : start + batch_size]
        report.add(await store.bulk.import_writes(batch, overwrite=overwrite, dry_run=dry_run))
        done += len(batch)
        progress.update(len(batch))
        await call_hook(after_batch, done)
    report.outcomes.sort(key=lambda outcome: outcome.key)
    await report.record(store, "env")
    progress.finish(report.summary())
    return report


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
