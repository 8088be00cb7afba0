"""`salesbot backup` / `restore`: SQLite's online backup API against a store that keeps being written."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from service.crypto import KeyRing
from service.jobs.backup import backup, restore
from service.jobs.base import JobError
from service.settings import Settings
from service.vault import TokenStore
from tests.conftest import TEST_DATABASE_URL, make_settings
from tests.jobs.helpers import cli_environ, salesbot

ONLY_BACKENDS = ["sqlite"]


def integrity(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return [row[0] for row in connection.execute("PRAGMA integrity_check")]
    finally:
        connection.close()


async def test_backup_is_consistent_while_the_service_writes(
    store: TokenStore, migrated: Settings, tmp_path: Path
) -> None:
    for n in range(300):  # enough pages that the copy takes several steps
        await store.store_token(f"FACEBOOK_ACCESS_TOKEN_pre{n:04d}", "EAA-" + "x" * 200)
    writes_during_backup = threading.Event()
    backing_up = asyncio.Event()
    loop = asyncio.get_running_loop()
    written: list[str] = []

    async def writer() -> None:
        n = 0
        while not done.is_set():
            await store.store_token(f"FACEBOOK_ACCESS_TOKEN_w{n:05d}", "EAA-live")
            written.append(f"FACEBOOK_ACCESS_TOKEN_w{n:05d}")
            n += 1
            if backing_up.is_set() and n >= 5:
                writes_during_backup.set()

    def first_step_waits_for_writes(copied: int, total: int) -> None:
        loop.call_soon_threadsafe(backing_up.set)
        assert writes_during_backup.wait(timeout=30)

    done = asyncio.Event()
    task = asyncio.create_task(writer())
    target = tmp_path / "backup.db"
    try:
        report = await backup(migrated.database_url, target, pages=4, on_step=first_step_waits_for_writes)
    finally:
        done.set()
        await task
    assert report.pages > 4 and oct(target.stat().st_mode & 0o777) == "0o600"
    assert integrity(target) == ["ok"]
    async with TokenStore.open(migrated.with_database(f"sqlite+aiosqlite:///{target}")) as copy:
        keys = [record.key for record in await copy.list_tokens()]
        assert await copy.get_token("FACEBOOK_ACCESS_TOKEN_pre0299") == "EAA-" + "x" * 200
    copied_writes = [key for key in keys if "_w" in key]
    # One snapshot: the writes it holds are exactly a prefix of those made, and some were left out.
    assert copied_writes == written[: len(copied_writes)]
    assert len(copied_writes) < len(written)


async def test_an_existing_path_is_never_overwritten(migrated: Settings, tmp_path: Path) -> None:
    target = tmp_path / "exists.db"
    target.write_text("precious")
    with pytest.raises(JobError, match="already exists"):
        await backup(migrated.database_url, target)
    with pytest.raises(JobError, match="does not exist"):
        await backup(migrated.database_url, tmp_path / "no-such-dir" / "b.db")
    assert target.read_text() == "precious"


async def test_an_interrupted_backup_leaves_no_file_and_the_rerun_works(migrated: Settings, tmp_path: Path) -> None:
    target = tmp_path / "b.db"

    def stop(copied: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await backup(migrated.database_url, target, pages=1, on_step=stop)
    assert not target.exists() and not (tmp_path / "b.db.partial").exists()
    report = await backup(migrated.database_url, target)
    assert integrity(target) == ["ok"] and report.path == target


async def test_postgres_is_pointed_at_pg_dump() -> None:
    with pytest.raises(JobError, match="pg_dump") as failure:
        await backup(TEST_DATABASE_URL or "postgresql+asyncpg://u@h/db", Path("/nonexistent/backup.db"))
    assert failure.value.status == 2


async def test_restore_needs_yes_checks_the_file_and_saves_the_current_database(
    store: TokenStore, migrated: Settings, tmp_path: Path
) -> None:
    await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat-old")
    saved = tmp_path / "saved.db"
    await backup(migrated.database_url, saved)
    await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat-new")
    ring = KeyRing.from_settings(migrated)

    with pytest.raises(JobError, match="--yes"):
        await restore(migrated.database_url, saved, ring=ring, confirmed=False)
    junk = tmp_path / "junk.db"
    junk.write_text("not a database " * 100)
    with pytest.raises(JobError, match="not a usable tokens database"):
        await restore(migrated.database_url, junk, ring=ring, confirmed=True)
    foreign = make_settings(migrated.database_url, TOKEN_ENCRYPTION_KEYS="", STATE_TOKEN_SECRET="some-other-secret-123")
    with pytest.raises(JobError, match="cannot be decrypted"):
        await restore(migrated.database_url, saved, ring=KeyRing.from_settings(foreign), confirmed=True)
    assert await store.get_token("SHOPIFY_ACCESS_TOKEN_acme") == "shpat-new"  # nothing changed so far

    report = await restore(migrated.database_url, saved, ring=ring, confirmed=True)
    assert await store.get_token("SHOPIFY_ACCESS_TOKEN_acme") == "shpat-old"  # the open store's very next read
    async with TokenStore.open(migrated.with_database(f"sqlite+aiosqlite:///{report.previous_saved_to}")) as before:
        assert await before.get_token("SHOPIFY_ACCESS_TOKEN_acme") == "shpat-new"


async def test_the_command_line_backs_up_once_and_refuses_the_second_time(migrated: Settings, tmp_path: Path) -> None:
    target = tmp_path / "cli-backup.db"
    environ = cli_environ(migrated)
    first = salesbot("backup", str(target), cwd=tmp_path, environ=environ)
    assert first.returncode == 0, first.stderr
    assert "integrity ok" in first.stderr and oct(target.stat().st_mode & 0o777) == "0o600"
    second = salesbot("backup", str(target), cwd=tmp_path, environ=environ)
    assert second.returncode == 1 and "already exists" in second.stderr
    pg = salesbot(
        "backup",
        str(tmp_path / "x.db"),
        cwd=tmp_path,
        environ=cli_environ(migrated.with_database("postgresql+asyncpg://u@127.0.0.1:1/x")),
    )
    assert pg.returncode == 2 and "pg_dump" in pg.stderr


async def test_backup_and_restore_leave_no_wal_shm_or_partial_files_beside_their_outputs(
    migrated: Settings, tmp_path: Path
) -> None:
    async with TokenStore.open(migrated) as store:
        await store.store_token("FACEBOOK_ACCESS_TOKEN_1", "EAA-before-backup")
    backups = tmp_path / "backups"
    backups.mkdir()
    environ = cli_environ(migrated)
    made = salesbot("backup", str(backups / "tokens-1.db"), cwd=tmp_path, environ=environ)
    assert made.returncode == 0, made.stderr
    assert sorted(path.name for path in backups.iterdir()) == ["tokens-1.db"]
    live = Path(migrated.database_url.split("///", 1)[1])
    beside_live = {path.name for path in live.parent.iterdir()}
    restored = salesbot("restore", str(backups / "tokens-1.db"), "--yes", cwd=tmp_path, environ=environ)
    assert restored.returncode == 0, restored.stderr
    assert sorted(path.name for path in backups.iterdir()) == ["tokens-1.db"]  # the source too
    saved = [name for name in (path.name for path in live.parent.iterdir()) if name not in beside_live]
    assert len(saved) == 1 and saved[0].startswith(f"{live.name}.before-restore-"), saved
    async with TokenStore.open(migrated) as store:
        assert await store.get_token("FACEBOOK_ACCESS_TOKEN_1") == "EAA-before-backup"


async def test_a_restore_is_an_event_in_the_restored_database_and_event_numbers_never_go_back(
    migrated: Settings, tmp_path: Path
) -> None:
    async with TokenStore.open(migrated) as store:
        await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat-old")
    saved = tmp_path / "saved.db"
    assert salesbot("backup", str(saved), cwd=tmp_path, environ=cli_environ(migrated)).returncode == 0
    async with TokenStore.open(migrated) as store:
        await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat-new")
        await store.delete_token("SHOPIFY_ACCESS_TOKEN_acme")
        newest_before = await store.event_log.newest_seq()  # three events; the backup holds one
    restored = salesbot("restore", str(saved), "--yes", cwd=tmp_path, environ=cli_environ(migrated))
    assert restored.returncode == 0, restored.stderr
    async with TokenStore.open(migrated) as store:
        logged = await store.event_log.list()
    assert [event.kind for event in logged] == ["token_set", "restored"]
    restored_event = logged[-1]
    assert restored_event.seq > newest_before  # a follower that saw seq 3 still hears of the restore
    assert (restored_event.actor, restored_event.detail["from"]) == ("cli", "saved.db")  # type: ignore[index]
