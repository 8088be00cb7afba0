"""Running Alembic from Python: `salesbot migrate`/`downgrade`, the tests and the demo go through here.

Also what env.py does around the revisions (advisory lock, seed adoption, recording where the
database started and ended), and which downgrades lose token data. See DESIGN.md, "Migrations".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from service.crypto import KeyRing
from service.errors import SchemaOutOfDate, ServiceError

# The revisions: inside the package when installed from a wheel (pyproject maps the repository's
# migrations/ there), else the checkout's migrations/, beside service/. One copy either way.
PACKAGED_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATIONS = PACKAGED_MIGRATIONS if PACKAGED_MIGRATIONS.is_dir() else PACKAGED_MIGRATIONS.parent.parent / "migrations"
SEED_REVISION = "0001"
# Any constant works; it only has to be the same in every instance. ("salesbot" in ASCII.)
MIGRATION_LOCK_ID = 0x73616C6573626F74


def alembic_config(database_url: str | None = None, keyring: KeyRing | None = None) -> Config:
    # No alembic.ini here: it only configures the `alembic` command's logging, which in-process runs skip.
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if database_url is not None:
        config.attributes["database_url"] = database_url
    config.attributes["keyring"] = keyring
    return config


class InvalidRevision(ServiceError):
    """A revision argument that names no revision, or a step the history does not have."""

    status_code = 400
    code = "invalid_revision"


@dataclass(frozen=True)
class Migration:
    """Where one upgrade or downgrade started and ended (None: base, no schema)."""

    action: str  # "upgrade" or "downgrade"
    before: str | None
    after: str | None
    head: str
    adopted_seed: bool = False

    def _name(self, revision: str | None) -> str:
        if revision == self.head:
            return f"head ({revision})"
        return "base (no schema)" if revision is None else revision

    def summary(self) -> str:
        """One line naming the revision the database is at now, not the argument it was given."""
        if self.before == self.after:
            return f"Database already at {self._name(self.after)}; nothing to do."
        if self.adopted_seed:
            return f"Adopted the seed's tokens table as revision 0001 and upgraded it to {self._name(self.after)}."
        return f"Database {self.action}d from {self._name(self.before)} to {self._name(self.after)}."


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None
    return head


def _run(action: str, database_url: str, keyring: KeyRing | None, revision: str) -> Migration:
    config = alembic_config(database_url, keyring)
    try:
        getattr(command, action)(config, revision)
    except CommandError as error:
        known = ", ".join(known_revisions())
        raise InvalidRevision(f"{error}: give a revision id ({known}), head, base or -N.") from None
    before, after, adopted = config.attributes["migration"]
    return Migration(action, before, after, head_revision(), adopted)


def upgrade(database_url: str, keyring: KeyRing | None, revision: str = "head") -> Migration:
    return _run("upgrade", database_url, keyring, revision)


def downgrade(database_url: str, keyring: KeyRing | None, revision: str) -> Migration:
    return _run("downgrade", database_url, keyring, revision)


async def upgrade_async(database_url: str, keyring: KeyRing | None, revision: str = "head") -> Migration:
    # Alembic's env.py runs its own event loop; from inside a running loop it needs a thread of its own.
    return await asyncio.to_thread(upgrade, database_url, keyring, revision)


async def downgrade_async(database_url: str, keyring: KeyRing | None, revision: str) -> Migration:
    return await asyncio.to_thread(downgrade, database_url, keyring, revision)


def known_revisions() -> list[str]:
    return sorted(script.revision for script in script_directory().walk_revisions())


def downgrade_target(current: str | None, revision: str) -> str | None:
    """Where `salesbot downgrade REVISION` would leave a database now at `current` (None: base)."""
    script = script_directory()
    if revision == "base":
        return None
    if revision.startswith("-") and revision[1:].isdigit():
        target = current
        for _ in range(int(revision[1:])):
            if target is None:
                raise InvalidRevision(
                    f"The database is at {current or 'base'}; there is no revision {revision} below it to go back to."
                )
            target = script.get_revision(target).down_revision  # type: ignore[union-attr,assignment]
        return target
    try:
        found = script.get_revision(revision)
    except CommandError:
        found = None
    if found is None:
        raise InvalidRevision(f"Unknown revision {revision!r}: give one of {', '.join(known_revisions())}, base or -N.")
    undone = revisions_between(current, found.revision)
    if current != found.revision and not undone:
        raise InvalidRevision(f"The database is at {current or 'base'}, which is not above {found.revision}.")
    return found.revision


def revisions_between(upper: str | None, lower: str | None) -> list[str]:
    """The revisions a downgrade from `upper` to `lower` undoes, newest first ([] when lower is not below)."""
    script = script_directory()
    undone: list[str] = []
    current = upper
    while current is not None and current != lower:
        undone.append(current)
        current = script.get_revision(current).down_revision  # type: ignore[union-attr,assignment]
    return undone if current == lower else []


def token_data_lost(undone: list[str]) -> list[str]:
    """What undoing these revisions deletes of the tokens (each revision says so in `downgrade_loses`)."""
    script = script_directory()
    losses = [getattr(script.get_revision(revision).module, "downgrade_loses", None) for revision in undone]
    return [loss for loss in losses if loss]


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


def record(config: Config, before: str | None, after: str | None, *, adopted: bool) -> None:
    """env.py notes where the database started and ended, for `upgrade`/`downgrade` to report."""
    config.attributes["migration"] = (before, after, adopted)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def require_head(engine: AsyncEngine) -> None:
    current, head = await current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"The database is at revision {current or 'none'} and this code needs {head}: run `salesbot migrate`."
        )
