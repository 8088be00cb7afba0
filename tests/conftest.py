"""Shared fixtures: settings built from a dict, databases built by the real Alembic migrations.

Every database fixture runs once per backend: SQLite (a file under tmp_path) always, and PostgreSQL
when TEST_DATABASE_URL names one (a fresh schema per test, in a database of this run's own). A
machine without PostgreSQL simply has no postgres cases; nothing is skipped. Postgres cases carry
the `postgres` marker: `pytest -m postgres` runs them alone.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from service import migrate
from service.crypto import KeyRing
from service.settings import Settings, sqlite_url
from service.vault import TokenStore

STATE_SECRET = "test-state-token-secret-0123456789"
PRIMARY_KEY = Fernet.generate_key().decode()
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgres"] if TEST_DATABASE_URL else [])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        # A module about one backend only (SQLite pragmas, say) sets ONLY_BACKENDS.
        wanted = getattr(metafunc.module, "ONLY_BACKENDS", BACKENDS)
        # The postgres case carries the marker, so `pytest -m postgres` (or `-m "not postgres"`) selects by backend.
        params = [pytest.param(name, marks=[pytest.mark.postgres] if name == "postgres" else []) for name in BACKENDS]
        metafunc.parametrize("backend", [param for param in params if param.values[0] in wanted])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `postgres` by hand (not through `backend`) exist only when TEST_DATABASE_URL is set:
    without it they are deselected, like the postgres cases that are never generated."""
    if TEST_DATABASE_URL:
        return
    dropped = [item for item in items if item.get_closest_marker("postgres")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker("postgres")]


def base_environ(**overrides: str) -> dict[str, str]:
    environ = {"STATE_TOKEN_SECRET": STATE_SECRET, "TOKEN_ENCRYPTION_KEYS": PRIMARY_KEY}
    environ.update(overrides)
    return environ


def make_settings(database_url: str, **overrides: str) -> Settings:
    return Settings.from_environ(base_environ(DATABASE_URL=database_url, **overrides), env_file=None)


async def _reset_postgres(url: str) -> None:
    import asyncpg

    raw = url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(raw)
    try:
        await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await connection.close()


async def _create_postgres_database(url: str, name: str) -> str:
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return str(make_url(url).set(database=name).render_as_string(hide_password=False))


_own_postgres: str | None = None


def own_postgres_database() -> str:
    """A database of this test run's own on the TEST_DATABASE_URL server, so that two runs at once
    (a developer's and CI's, say) never reset each other's schema."""
    global _own_postgres
    if _own_postgres is None:
        assert TEST_DATABASE_URL is not None
        _own_postgres = asyncio.run(_create_postgres_database(TEST_DATABASE_URL, f"salesbot_test_{os.getpid()}"))
    return _own_postgres


def empty_database(backend: str, tmp_path: Path) -> str:
    """A database with nothing in it, for the backend asked for."""
    if backend == "sqlite":
        return sqlite_url(tmp_path / "data" / "tokens.db")
    url = own_postgres_database()
    asyncio.run(_reset_postgres(url))
    return url


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _own_postgres is not None and TEST_DATABASE_URL is not None:
        asyncio.run(_drop_postgres_database(str(make_url(_own_postgres).database)))


async def _drop_postgres_database(name: str) -> None:
    import asyncpg

    assert TEST_DATABASE_URL is not None
    connection = await asyncpg.connect(TEST_DATABASE_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture
def scratch_postgres() -> Iterator[str]:
    """An empty database of this test's own on the TEST_DATABASE_URL server (for tests that stop it from
    accepting connections or terminate its backends: nobody else's database is touched)."""
    assert TEST_DATABASE_URL is not None, "mark the test @pytest.mark.postgres"
    name = f"salesbot_test_{os.getpid()}_scratch"
    url = asyncio.run(_create_postgres_database(TEST_DATABASE_URL, name))
    try:
        yield url
    finally:
        asyncio.run(_drop_postgres_database(name))


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> str:
    """An empty database of the parametrized backend (not migrated)."""
    return empty_database(backend, tmp_path)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    """Settings whose database has been upgraded to head by Alembic."""
    migrate.upgrade(settings.database_url, KeyRing.from_settings(settings))
    return settings


@pytest.fixture
async def store(migrated: Settings) -> AsyncIterator[TokenStore]:
    async with TokenStore.open(migrated) as opened:
        yield opened


@pytest.fixture
def settings_factory() -> Callable[..., Settings]:
    return make_settings


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("STATE_TOKEN", "TOKEN_", "DATABASE_URL", "SHOPIFY_", "FACEBOOK_")):
            monkeypatch.delenv(name)
    yield
