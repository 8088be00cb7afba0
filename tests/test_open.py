"""Opening never creates a database by accident, and TokenStore.open takes every URL form DATABASE_URL takes.

A typo in TOKEN_DB_PATH used to become an empty file that then asked to be migrated: now `TokenStore.open`,
`serve` and `tokens ...` stop in one line naming the path and `salesbot migrate`, and leave nothing behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from service import migrate
from service.crypto import KeyRing
from service.errors import DatabaseMissing, DatabaseUnavailable
from service.vault import TokenStore
from tests.command import assert_one_line_failure, salesbot
from tests.conftest import PRIMARY_KEY, STATE_SECRET, make_settings

SECRET = {"STATE_TOKEN_SECRET": STATE_SECRET, "TOKEN_ENCRYPTION_KEYS": PRIMARY_KEY}


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


async def test_open_on_a_missing_sqlite_file_names_it_and_migrate_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "data" / "tokns.db"
    with pytest.raises(DatabaseMissing) as raised:
        async with TokenStore.open(make_settings(f"sqlite+aiosqlite:///{missing}")):
            pass
    assert str(missing) in raised.value.message and "salesbot migrate" in raised.value.message
    assert raised.value.code == "database_missing"
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("command", [["tokens", "list"], ["tokens", "get", "SHOPIFY_ACCESS_TOKEN_acme"], ["serve"]])
def test_commands_on_a_missing_sqlite_file_stop_in_one_line_and_create_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    environ = {**SECRET, "TOKEN_DB_PATH": "./data/tokns.db"}
    result = salesbot(*command, cwd=tmp_path, environ=environ)
    assert_one_line_failure(result, 1, "data/tokns.db", "salesbot migrate")
    assert files_under(tmp_path) == []


def test_migrate_still_creates_the_database(tmp_path: Path) -> None:
    environ = {**SECRET, "TOKEN_DB_PATH": "./data/tokens.db"}
    assert salesbot("migrate", cwd=tmp_path, environ=environ).returncode == 0
    assert (tmp_path / "data" / "tokens.db").is_file()
    listed = salesbot("tokens", "list", cwd=tmp_path, environ=environ)
    assert listed.returncode == 0 and "0 row(s)" in listed.stderr


def url_forms(database_url: str) -> list[str]:
    """The same database as an operator might write it in DATABASE_URL."""
    parsed = make_url(database_url)
    if parsed.get_backend_name() == "sqlite":
        return [f"sqlite:///{parsed.database}", f"sqlite+aiosqlite:///{parsed.database}"]
    rest = database_url.split("://", 1)[1]
    return [f"postgresql://{rest}", f"postgres://{rest}", f"postgresql+asyncpg://{rest}"]


async def test_open_takes_every_url_form_database_url_takes(
    store: TokenStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat_url_forms")
    monkeypatch.chdir(tmp_path)  # no .env here: the keys come from the environment
    for name, value in SECRET.items():
        monkeypatch.setenv(name, value)
    for url in url_forms(store.settings.database_url):
        async with TokenStore.open(url) as opened:
            assert await opened.get_token("SHOPIFY_ACCESS_TOKEN_acme") == "shpat_url_forms", url


async def test_a_sqlite_file_that_cannot_be_opened_reaches_the_bot_as_database_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "data" / "tokens.db"
    settings = make_settings(f"sqlite:///{path}")
    await migrate.upgrade_async(settings.database_url, KeyRing.from_settings(settings))
    async with TokenStore.open(settings) as store:
        await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat_x")
        path.rename(path.with_name("moved.db"))
        path.mkdir()  # what the path names now cannot be opened as a database
        with pytest.raises(DatabaseUnavailable) as raised:
            await store.list_tokens()  # a listing opens a connection of its own
        assert raised.value.code == "database_unavailable" and raised.value.retry_after > 0
        path.rmdir()
        path.with_name("moved.db").rename(path)
        assert [record.key for record in await store.list_tokens()] == ["SHOPIFY_ACCESS_TOKEN_acme"]  # recovered
