"""`salesbot downgrade` never deletes tokens silently; migrate and downgrade name the revision they end at."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from service import migrate
from service.settings import Settings
from service.vault import TokenStore
from tests.command import assert_one_line_failure, salesbot
from tests.conftest import base_environ, make_settings
from tests.jobs.helpers import dump


def environ_for(settings: Settings) -> dict[str, str]:
    return base_environ(DATABASE_URL=settings.database_url)


async def stored(settings: Settings) -> list[tuple]:
    async with TokenStore.open(settings) as store:
        return await dump(store)


async def test_migrate_names_where_it_started_and_ended(settings: Settings, tmp_path: Path) -> None:
    environ = environ_for(settings)
    head = migrate.head_revision()
    partial = salesbot("migrate", "0002", cwd=tmp_path, environ=environ)
    assert partial.stdout == "Database upgraded from base (no schema) to 0002.\n", partial.stderr
    rest = salesbot("migrate", cwd=tmp_path, environ=environ)
    assert rest.stdout == f"Database upgraded from 0002 to head ({head}).\n", rest.stderr
    again = salesbot("migrate", "head", cwd=tmp_path, environ=environ)
    assert again.stdout == f"Database already at head ({head}); nothing to do.\n"


async def test_a_downgrade_that_keeps_the_tokens_runs_and_names_its_end(migrated: Settings, tmp_path: Path) -> None:
    async with TokenStore.open(migrated) as store:
        await store.store_token("FACEBOOK_ACCESS_TOKEN_1", "EAA-kept")
    result = salesbot("downgrade", "-1", cwd=tmp_path, environ=environ_for(migrated))
    head = migrate.head_revision()
    below = migrate.revisions_between(head, None)[1]
    assert result.returncode == 0 and result.stdout == f"Database downgraded from head ({head}) to {below}.\n"
    assert result.stderr == ""  # nothing to confirm, no copy made


@pytest.mark.parametrize("target", ["base", "0001"])
async def test_a_downgrade_that_deletes_token_data_is_refused_without_yes(
    migrated: Settings, tmp_path: Path, target: str
) -> None:
    async with TokenStore.open(migrated) as store:
        await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat_kept", expires_at=None, scopes="read_orders")
    before = await stored(migrated)
    result = salesbot("downgrade", target, cwd=tmp_path, environ=environ_for(migrated))
    line = assert_one_line_failure(result, 2, "--yes", "Nothing was changed")
    assert "refresh tokens" in line
    if migrated.database_url.startswith("postgresql"):
        assert "pg_dump" in line
    assert await stored(migrated) == before  # schema and every row exactly as they were


async def test_yes_on_sqlite_saves_a_copy_beside_the_database_first(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'tokens.db'}")
    await migrate.upgrade_async(settings.database_url, None)
    async with TokenStore.open(settings) as store:
        await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat_saved")
    before = await stored(settings)
    result = salesbot("downgrade", "base", "--yes", cwd=tmp_path, environ=environ_for(settings))
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("to base (no schema).\n")
    copies = sorted((tmp_path / "data").glob("tokens.db.before-downgrade-*"))
    assert len(copies) == 1 and f"Saved the database as {copies[0]} first." in result.stderr
    assert sorted(path.name for path in (tmp_path / "data").iterdir() if "before-downgrade" in path.name) == [
        copies[0].name  # no -wal, -shm or .partial beside it
    ]
    copy = make_settings(f"sqlite+aiosqlite:///{copies[0]}")
    assert await stored(copy) == before  # the copy holds what the downgrade deleted
    tables = {
        name for (name,) in sqlite3.connect(tmp_path / "data" / "tokens.db").execute("SELECT name FROM sqlite_master")
    }
    assert "tokens" not in tables


@pytest.mark.postgres
def test_yes_on_postgres_goes_ahead_and_says_no_copy_was_made(scratch_postgres: str, tmp_path: Path) -> None:
    environ = base_environ(DATABASE_URL=scratch_postgres)
    assert salesbot("migrate", cwd=tmp_path, environ=environ).returncode == 0
    result = salesbot("downgrade", "base", "--yes", cwd=tmp_path, environ=environ)
    assert result.returncode == 0 and "pg_dump" in result.stderr and result.stdout.endswith("to base (no schema).\n")
