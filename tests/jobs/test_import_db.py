"""`salesbot import-db`: another tokens.db (the seed's, another secret) into this store, under our key."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from service.crypto import KeyRing, derive_seed_key
from service.jobs.base import JobError
from service.jobs.import_db import import_db, source_ring
from service.settings import Settings
from tests.conftest import PRIMARY_KEY, STATE_SECRET
from tests.jobs.helpers import ACCOUNT, ciphertexts, cli_environ, dump, opened, salesbot
from tests.seed_loader import SEED_FIXTURE_SECRET, SEED_ROWS, copy_seed_database

OTHER_SECRET = SEED_FIXTURE_SECRET  # the other deployment's: the seed wrote tests/fixtures/seed_tokens.db with it


def seed_database(path: Path) -> Path:
    """A database the seed chapter's own TokenStorage wrote, under another STATE_TOKEN_SECRET than ours."""
    return copy_seed_database(path)


def bulk_seed_database(path: Path, count: int, *, unreadable: set[int] = frozenset()) -> Path:
    seed = Fernet(derive_seed_key(OTHER_SECRET))
    stranger = Fernet(Fernet.generate_key())
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE tokens (key TEXT PRIMARY KEY, value TEXT NOT NULL, type TEXT NOT NULL)")
        connection.executemany(
            "INSERT INTO tokens VALUES (?, ?, ?)",
            [
                (
                    f"FACEBOOK_ACCESS_TOKEN_{n:05d}",
                    (stranger if n in unreadable else seed).encrypt(b"EAA-bulk").decode(),
                    "token",
                )
                for n in range(count)
            ],
        )
    connection.close()
    return path


def ring(secret: str = OTHER_SECRET) -> KeyRing:
    return source_ring([PRIMARY_KEY], STATE_SECRET, secret)


async def test_a_seed_database_with_another_secret_is_imported_and_linked(migrated: Settings, tmp_path: Path) -> None:
    source = seed_database(tmp_path / "seed.db")
    async with opened(migrated) as store:
        report = await import_db(store, source, ring=ring(), secret_label="OLD_SECRET")
        wrong = [key for key, (value, _) in SEED_ROWS.items() if await store.get_token(key) != value]
        records = {record.key: record for record in await store.list_tokens()}
        stored = await ciphertexts(store)
    assert wrong == [] and report.ok and report.count("imported") == 5
    assert records["PAGE_UUID_1234"].type == "uuid"
    assert records["FACEBOOK_ACCESS_TOKEN_1234"].account_uuid == ACCOUNT
    assert records["SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr"].account_uuid == ACCOUNT
    primary = KeyRing([PRIMARY_KEY])
    assert all(primary.is_current(value) for value, _ in stored.values())


async def test_second_run_changes_nothing(migrated: Settings, tmp_path: Path) -> None:
    source = seed_database(tmp_path / "seed.db")
    async with opened(migrated) as store:
        await import_db(store, source, ring=ring(), secret_label="OLD_SECRET")
        before = await dump(store)
        again = await import_db(store, source, ring=ring(), secret_label="OLD_SECRET")
        assert await dump(store) == before
    assert again.ok and again.count("unchanged") == 5 and "5 unchanged" in again.summary()


async def test_the_wrong_secret_stops_before_anything_is_written(migrated: Settings, tmp_path: Path) -> None:
    source = bulk_seed_database(tmp_path / "seed.db", 20)
    async with opened(migrated) as store:
        before = await dump(store)
        with pytest.raises(JobError, match="OLD_SECRET") as failure:
            await import_db(store, source, ring=ring("not-the-secret"), secret_label="OLD_SECRET")
        assert await dump(store) == before
    assert "Nothing was imported" in str(failure.value) and "EAA" not in str(failure.value)


async def test_missing_file_and_files_that_are_not_token_databases(migrated: Settings, tmp_path: Path) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello " * 200)
    other = tmp_path / "other.db"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE things (id INTEGER)")
    connection.close()
    async with opened(migrated) as store:
        before = await dump(store)
        for path, message in (
            (tmp_path / "missing.db", "does not exist"),
            (text_file, "not an SQLite database"),
            (other, "no tokens table"),
        ):
            with pytest.raises(JobError, match=message):
                await import_db(store, path, ring=ring(), secret_label="OLD_SECRET")
        assert await dump(store) == before


async def test_an_unreadable_row_later_in_the_file_is_named_and_skipped(migrated: Settings, tmp_path: Path) -> None:
    source = bulk_seed_database(tmp_path / "seed.db", 30, unreadable={17})
    async with opened(migrated) as store:
        report = await import_db(store, source, ring=ring(), secret_label="OLD_SECRET", batch_size=10)
        assert await store.get_record("FACEBOOK_ACCESS_TOKEN_00017") is None
        assert len(await store.list_tokens()) == 29
    assert not report.ok
    assert [(o.key, o.status) for o in report.outcomes] == [("FACEBOOK_ACCESS_TOKEN_00017", "skipped")]


async def test_interrupted_import_resumes_and_existing_values_win(migrated: Settings, tmp_path: Path) -> None:
    source = bulk_seed_database(tmp_path / "seed.db", 45)

    def stop(seen: int) -> None:
        raise KeyboardInterrupt

    async with opened(migrated) as store:
        await store.store_token("FACEBOOK_ACCESS_TOKEN_00040", "EAA-newer")
        with pytest.raises(KeyboardInterrupt):
            await import_db(store, source, ring=ring(), secret_label="OLD_SECRET", batch_size=20, after_batch=stop)
        assert len(await store.list_tokens()) == 21
        report = await import_db(store, source, ring=ring(), secret_label="OLD_SECRET", batch_size=20)
        assert await store.get_token("FACEBOOK_ACCESS_TOKEN_00040") == "EAA-newer"
        assert len(await store.list_tokens()) == 45
    assert (report.count("unchanged"), report.count("imported"), report.count("skipped")) == (20, 24, 1)


async def test_the_command_line_reads_the_secret_from_the_named_variable(migrated: Settings, tmp_path: Path) -> None:
    source = seed_database(tmp_path / "seed.db")
    environ = cli_environ(migrated, OLD_SECRET=OTHER_SECRET)
    wrong = salesbot("import-db", str(source), cwd=tmp_path, environ=environ)
    assert wrong.returncode == 1 and "STATE_TOKEN_SECRET" in wrong.stderr and "Traceback" not in wrong.stderr
    unset = salesbot("import-db", str(source), "--secret-env", "NOT_SET", cwd=tmp_path, environ=environ)
    assert unset.returncode == 2 and "NOT_SET is not set" in unset.stderr
    result = salesbot("import-db", str(source), "--secret-env", "OLD_SECRET", cwd=tmp_path, environ=environ)
    assert result.returncode == 0, result.stderr
    assert "5 imported" in result.stderr
    assert all(value not in result.stdout + result.stderr for value, _ in SEED_ROWS.values())
