"""Alembic environment: async, the service's own engine (so SQLite gets its pragmas), batch mode for
SQLite, and the key ring handed to revisions that must read encrypted rows (DESIGN.md, "Migrations").

In-process (`salesbot migrate`, tests) the caller hands over the database URL and key ring in
`config.attributes`. From the `alembic` command line this reads the same settings as `salesbot
migrate` (environment, then .env, or `-x env_file=PATH`) and refuses with the same one line when they
do not load; alembic.ini's logging then says which revisions ran.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from logging.config import fileConfig

from alembic import context
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from service.crypto import KeyRing
from service.db import WRITE_OPTION, create_engine, describe_database_error
from service.errors import ServiceError
from service.migrate import (
    adopt_seed_database,
    downgrade_target,
    record,
    revisions_between,
    take_migration_lock,
    token_data_lost,
)
from service.models import Base
from service.vault import schema as _vault_tables  # noqa: F401  (registers tokens and accounts on Base.metadata)

config = context.config
log = logging.getLogger("alembic.env")
IN_PROCESS = "database_url" in config.attributes or "connection" in config.attributes


def _fail(message: str, status: int) -> None:
    print(f"salesbot: {message}", file=sys.stderr)
    raise SystemExit(status)


def _settings_from_command_line() -> tuple[str, KeyRing]:
    from service.security import check_secret
    from service.settings import Settings

    env_file = context.get_x_argument(as_dictionary=True).get("env_file")
    try:
        settings = Settings.load(env_file)
        ring = KeyRing.from_settings(settings)
        check_secret(settings)
    except ServiceError as error:
        _fail(error.message, 2)
    return settings.database_url, ring


def _refuse_silent_token_loss(current: str | None) -> None:
    """`alembic downgrade` that would delete token data needs `-x yes=1`, as `salesbot downgrade` needs --yes."""
    options = config.cmd_opts
    if options is None or getattr(options, "cmd", (None,))[0].__name__ != "downgrade":
        return
    if context.get_x_argument(as_dictionary=True).get("yes") == "1":
        return
    destination = options.revision
    lost = token_data_lost(revisions_between(current, downgrade_target(current, destination)))
    if lost:
        _fail(
            f"Downgrading to {destination} deletes {'; '.join(lost)}: run `salesbot downgrade {destination} --yes` "
            "(it saves a copy of a SQLite database first), or pass -x yes=1. Nothing was changed.",
            2,
        )


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
        migration_context = context.get_context()
        before = migration_context.get_current_revision()
        if not IN_PROCESS:
            _refuse_silent_token_loss(before)
        adopted = adopt_seed_database(connection)
        context.run_migrations()
        after = migration_context.get_current_revision()
    record(config, before, after, adopted=adopted)
    if before == after and not IN_PROCESS:
        head = ScriptDirectory.from_config(config).get_current_head()
        log.info("already at %s", f"head ({head})" if after == head else (after or "base"))


async def _run_online(url: str, ring: KeyRing | None) -> None:
    config.attributes["keyring"] = ring
    engine = create_engine(url, keyring=ring, create=True)  # migrating is what creates a database
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
elif IN_PROCESS:
    asyncio.run(_run_online(config.attributes["database_url"], config.attributes.get("keyring")))
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    database_url, keyring = _settings_from_command_line()
    try:
        asyncio.run(_run_online(database_url, keyring))
    except ServiceError as error:  # e.g. a seed row that no key opens: named, nothing changed
        _fail(error.message, 1)
    except Exception as error:
        described = describe_database_error(error, database_url)
        if described is None:
            raise
        _fail(described, 1)
