"""Running Alembic from Python: `salesbot migrate`, the tests and the demo all upgrade this way.

Also the two things env.py does before any revision runs: take a PostgreSQL advisory lock, so two
deploys starting at once never run the same upgrade twice, and adopt a database the seed wrote.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from service.crypto import KeyRing

ROOT = Path(__file__).resolve().parent.parent
SEED_REVISION = "0001"
# Any constant works; it only has to be the same in every instance. ("salesbot" in ASCII.)
MIGRATION_LOCK_ID = 0x73616C6573626F74


def alembic_config(database_url: str | None = None, keyring: KeyRing | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    if database_url is not None:
        config.attributes["database_url"] = database_url
    config.attributes["keyring"] = keyring
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(database_url: str, keyring: KeyRing | None, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url, keyring), revision)


def downgrade(database_url: str, keyring: KeyRing | None, revision: str) -> None:
    command.downgrade(alembic_config(database_url, keyring), revision)


async def upgrade_async(database_url: str, keyring: KeyRing | None, revision: str = "head") -> None:
    # Alembic's env.py runs its own event loop; from inside a running loop it needs a thread of its own.
    await asyncio.to_thread(upgrade, database_url, keyring, revision)


async def downgrade_async(database_url: str, keyring: KeyRing | None, revision: str) -> None:
    await asyncio.to_thread(downgrade, database_url, keyring, revision)


def take_migration_lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Transaction-scoped: released by the commit that ends the upgrade, or by a crash.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")


def adopt_seed_database(connection: Connection) -> bool:
    """A `tokens` table and no `alembic_version`: the seed made this database. Stamp it at revision 1
    (which is exactly the seed's table) so the later revisions upgrade it in place."""
    tables = set(inspect(connection).get_table_names())
    if "tokens" not in tables or "alembic_version" in tables:
        return False
    connection.exec_driver_sql(
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
    )
    connection.execute(text("INSERT INTO alembic_version (version_num) VALUES (:rev)"), {"rev": SEED_REVISION})
    return True


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
