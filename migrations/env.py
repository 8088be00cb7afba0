"""Alembic environment: async, the service's own engine (so SQLite gets its pragmas), batch mode for
SQLite, and the key ring handed to revisions that must read encrypted rows.

The database URL and key ring come from `config.attributes` when `salesbot migrate` (or a test)
runs Alembic in-process, else from the same settings as the service (environment, then .env).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from service.crypto import KeyRing
from service.db import WRITE_OPTION, create_engine
from service.errors import SettingsError
from service.migrate import adopt_seed_database, take_migration_lock
from service.models import Base
from service.settings import DEFAULT_TOKEN_DB_PATH, Settings, sqlite_url

config = context.config


def _url_and_ring() -> tuple[str, KeyRing | None]:
    url = config.attributes.get("database_url")
    ring = config.attributes.get("keyring")
    if url is not None:
        return url, ring
    try:
        settings = Settings.from_environ()
    except SettingsError:
        # Schema changes need no secret; a revision that must decrypt rows says so itself.
        fallback = os.environ.get("DATABASE_URL") or sqlite_url(os.environ.get("TOKEN_DB_PATH", DEFAULT_TOKEN_DB_PATH))
        return fallback, None
    return settings.database_url, KeyRing.from_settings(settings)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
        # SQLite's DDL is transactional; Alembic assumes it is not, and then commits between revisions,
        # which let a second deploy starting at the same moment run a revision the first had just run.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        take_migration_lock(connection)
        adopt_seed_database(connection)
        context.run_migrations()


async def _run_online() -> None:
    url, ring = _url_and_ring()
    config.attributes["keyring"] = ring
    engine = create_engine(url, keyring=ring)
    try:
        async with engine.connect() as connection:
            connection = await connection.execution_options(**{WRITE_OPTION: True})
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported: run against a database.")

connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_online())
