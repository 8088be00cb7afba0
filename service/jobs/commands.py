"""Registers the jobs' subcommands on the `salesbot` parser.

Per-row findings (keys only, never values) go to stdout; progress and the one-line summary go to
stderr. Exit status: 0 when the job fully succeeded, 1 when it ran but something was left undone
(unreadable rows, skipped keys, dead tokens), 2 for usage errors (bad arguments, PostgreSQL backup).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from service.jobs.base import DEFAULT_BATCH_SIZE, JobError
from service.jobs.progress import Progress
from service.settings import Settings

EXIT_OK, EXIT_FAILED = 0, 1


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_environ(env_file=args.env_file)


def _handler(job: Callable[[argparse.Namespace], Awaitable[int]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(job(args))
        except JobError as error:
            print(f"salesbot: {error}", file=sys.stderr)
            return error.status

    return run


def _progress(label: str) -> Progress:
    return Progress(label, None, stream=sys.stderr)


def _status(ok: bool) -> int:
    return EXIT_OK if ok else EXIT_FAILED


# --- the jobs ------------------------------------------------------------------------------------


async def _rotate(args: argparse.Namespace) -> int:
    from service.jobs.rotate import rotate_keys
    from service.store import TokenStore

    async with TokenStore.open(_settings(args)) as store:
        report = await rotate_keys(
            store, batch_size=args.batch_size, dry_run=args.dry_run, progress=_progress("keys rotate")
        )
    for key in report.unreadable:
        print(f"unreadable     {key}")
    for key in report.contended:
        print(f"kept changing  {key}")
    return _status(report.ok)


def _print_import(report: Any) -> None:
    for outcome in report.outcomes:
        print(outcome.line(report.dry_run))
    for warning in report.warnings:
        print(f"salesbot: warning: {warning}", file=sys.stderr)


async def _import_env(args: argparse.Namespace) -> int:
    from service.jobs.import_env import import_env
    from service.store import TokenStore

    settings = _settings(args)
    env_file = Path(args.source_env_file) if args.source_env_file else settings.env_file
    async with TokenStore.open(settings) as store:
        await store.check_keys()  # our rows are compared, and new ones written, with this ring
        report = await import_env(
            store,
            env_file=env_file,
            overwrite=args.overwrite,
            dry_run=args.dry_run,
            progress=_progress("import-env"),
        )
    _print_import(report)
    return _status(report.ok)


def _secret_from(name: str, settings: Settings) -> str:
    value = os.environ.get(name)
    if value is None and settings.env_file is not None:
        from service.jobs.import_env import parse_env_file

        value = parse_env_file(settings.env_file).get(name)
    if not value:
        raise JobError(f"{name} is not set (in the environment or {settings.env_file or '.env'}).", status=2)
    return value


async def _import_db(args: argparse.Namespace) -> int:
    from service.jobs.import_db import import_db, source_ring
    from service.store import TokenStore

    settings = _settings(args)
    label = args.secret_env or "STATE_TOKEN_SECRET"
    secret = _secret_from(args.secret_env, settings) if args.secret_env else str(settings.state_token_secret)
    ring = source_ring([str(key) for key in settings.token_encryption_keys], str(settings.state_token_secret), secret)
    async with TokenStore.open(settings) as store:
        await store.check_keys()  # our rows are compared, and new ones written, with this ring
        report = await import_db(
            store,
            Path(args.path),
            ring=ring,
            secret_label=label,
            overwrite=args.overwrite,
            dry_run=args.dry_run,
            batch_size=args.batch_size,
            progress=_progress("import-db"),
        )
    _print_import(report)
    return _status(report.ok)


async def _backup(args: argparse.Namespace) -> int:
    from service.jobs.backup import backup

    await backup(_settings(args).database_url, Path(args.path), progress=_progress("backup"))
    return EXIT_OK


async def _restore(args: argparse.Namespace) -> int:
    from service.crypto import KeyRing
    from service.jobs.backup import restore

    settings = _settings(args)
    await restore(
        settings.database_url,
        Path(args.path),
        ring=KeyRing.from_settings(settings),
        confirmed=args.yes,
        progress=_progress("restore"),
    )
    return EXIT_OK


async def _check(args: argparse.Namespace) -> int:
    import httpx

    from service.jobs.check import check_tokens
    from service.store import TokenStore

    settings = _settings(args)
    async with TokenStore.open(settings) as store:
        if args.online:
            timeout = httpx.Timeout(settings.http_timeout_seconds)
            async with httpx.AsyncClient(timeout=timeout) as client:
                report = await check_tokens(
                    store,
                    online=True,
                    settings=settings,
                    client=client,
                    batch_size=args.batch_size,
                    progress=_progress("tokens check"),
                )
        else:
            report = await check_tokens(store, batch_size=args.batch_size, progress=_progress("tokens check"))
    for key in report.unreadable:
        print(f"unreadable  {key}")
    for key in report.dead:
        print(f"dead        {key}")
    for key, why in report.unknown:
        print(f"unknown     {key}  ({why})")
    print(report.table())
    return _status(report.ok)


def _downgrade(args: argparse.Namespace) -> int:
    from service import migrate
    from service.crypto import KeyRing

    settings = _settings(args)
    migrate.downgrade(settings.database_url, KeyRing.from_settings(settings), args.revision)
    print(f"Database downgraded to {args.revision}.")
    return EXIT_OK


# --- registration --------------------------------------------------------------------------------


def _batch_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per transaction (500)")


def add_commands(commands: Any, *, keys: Any, tokens: Any) -> None:
    """`commands`, `keys` and `tokens` are argparse sub-parser groups of `salesbot`, `salesbot keys`
    and `salesbot tokens`. Each added parser sets `handler`, a callable(args) -> exit status."""
    rotate = keys.add_parser("rotate", help="re-encrypt every stored value under the first TOKEN_ENCRYPTION_KEYS key")
    rotate.add_argument("--dry-run", action="store_true", help="count what would be rewritten; write nothing")
    _batch_size(rotate)
    rotate.set_defaults(handler=_handler(_rotate))

    check = tokens.add_parser("check", help="decrypt every row; with --online ask the providers if tokens work")
    check.add_argument("--online", action="store_true", help="ask Facebook and Shopify; mark dead tokens expired")
    _batch_size(check)
    check.set_defaults(handler=_handler(_check))

    env = commands.add_parser("import-env", help="store the tokens kept in environment variables or a .env file")
    env.add_argument(
        "--env-file", dest="source_env_file", metavar="PATH", help="read token variables from this file too"
    )
    env.add_argument("--dry-run", action="store_true", help="report what would be imported; write nothing")
    env.add_argument("--overwrite", action="store_true", help="replace stored values that differ")
    env.set_defaults(handler=_handler(_import_env))

    db = commands.add_parser("import-db", help="copy another tokens.db into this store under the current key")
    db.add_argument("path", metavar="PATH")
    db.add_argument("--secret-env", metavar="VAR", help="variable holding that database's STATE_TOKEN_SECRET")
    db.add_argument("--dry-run", action="store_true", help="report what would be imported; write nothing")
    db.add_argument("--overwrite", action="store_true", help="replace stored values that differ")
    _batch_size(db)
    db.set_defaults(handler=_handler(_import_db))

    backup = commands.add_parser("backup", help="consistent copy of the live SQLite store (mode 0600)")
    backup.add_argument("path", metavar="PATH")
    backup.set_defaults(handler=_handler(_backup))

    restore = commands.add_parser("restore", help="replace the SQLite store with a backup (saves the current one)")
    restore.add_argument("path", metavar="PATH")
    restore.add_argument("--yes", action="store_true", help="confirm: tokens written since the backup are lost")
    restore.set_defaults(handler=_handler(_restore))

    downgrade = commands.add_parser("downgrade", help="roll the schema back to REV (-1: one revision)")
    downgrade.add_argument("revision", metavar="REV")
    downgrade.set_defaults(handler=_downgrade)
