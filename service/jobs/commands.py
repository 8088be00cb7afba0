"""Registers the jobs' subcommands on the `salesbot` parser (DESIGN.md, "Jobs").

Per-row findings (keys only, never values, at most 20 per kind and then a count) go to stdout;
progress and the one-line summary go to stderr. Exit status: 0 when the job fully succeeded, 1 when
it ran but something was left undone (unreadable rows, skipped keys, dead tokens), 2 for usage errors
(bad arguments, PostgreSQL backup). Job modules are imported when their command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.command_line import EXIT_FAILED, EXIT_OK, add_command
from service.jobs import DEFAULT_BATCH_SIZE, JobError
from service.printable import say

if TYPE_CHECKING:
    from service.jobs.progress import Progress
    from service.settings import Settings


# Keys listed per kind of failure; past this a count stands for the rest (a run can fail 100,000 rows).
LISTED_KEYS = 20


def _settings(args: argparse.Namespace) -> Settings:
    from service.settings import Settings

    return Settings.load(args.env_file)


def _handler(job: Callable[[argparse.Namespace], Awaitable[int]]) -> Callable[[argparse.Namespace], int]:
    # JobError is turned into its one line and exit status by service.cli.main, with every other failure.
    return lambda args: asyncio.run(job(args))


def _progress(label: str) -> Progress:
    from service.jobs.progress import Progress

    return Progress(label, None, stream=sys.stderr)


def print_keys(label: str, keys: Sequence[str], *, width: int, limit: int = LISTED_KEYS) -> None:
    """One line per key, at most `limit` of them, then one line that counts the rest."""
    for key in keys[:limit]:
        say(f"{label:<{width}}  {key}")
    if len(keys) > limit:
        say(f"{label:<{width}}  ... and {len(keys) - limit:,} more ({len(keys):,} {label} in all)")


def _status(ok: bool) -> int:
    return EXIT_OK if ok else EXIT_FAILED


# --- the jobs ------------------------------------------------------------------------------------


async def _rotate(args: argparse.Namespace) -> int:
    from service.jobs.rotate import rotate_keys
    from service.vault import TokenStore

    async with TokenStore.open(_settings(args), actor="cli") as store:
        report = await rotate_keys(
            store, batch_size=args.batch_size, dry_run=args.dry_run, progress=_progress("keys rotate")
        )
    print_keys("unreadable", report.unreadable, width=13)
    print_keys("kept changing", report.contended, width=13)
    return _status(report.ok)


def _print_import(report: Any) -> None:
    for outcome in report.outcomes:
        say(outcome.line(report.dry_run))
    for warning in report.warnings:
        say(f"salesbot: warning: {warning}", file=sys.stderr)


async def _import_env(args: argparse.Namespace) -> int:
    from service.jobs.import_env import import_env
    from service.vault import TokenStore

    settings = _settings(args)
    env_file = Path(args.source_env_file) if args.source_env_file else settings.env_file
    async with TokenStore.open(settings, actor="cli") as store:
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
    from service.settings import read_env_file

    value = os.environ.get(name)
    if value is None and settings.env_file is not None:
        value = read_env_file(settings.env_file).get(name)
    if not value:
        raise JobError(f"{name} is not set (in the environment or {settings.env_file or '.env'}).", status=2)
    return value


async def _import_db(args: argparse.Namespace) -> int:
    from service.jobs.import_db import import_db, source_ring
    from service.vault import TokenStore

    settings = _settings(args)
    label = args.secret_env or "STATE_TOKEN_SECRET"
    secret = _secret_from(args.secret_env, settings) if args.secret_env else str(settings.state_token_secret)
    ring = source_ring([str(key) for key in settings.token_encryption_keys], str(settings.state_token_secret), secret)
    async with TokenStore.open(settings, actor="cli") as store:
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
    from service.vault import TokenStore
    from service.vault.events import RESTORED, Event

    settings = _settings(args)
    report = await restore(
        settings.database_url,
        Path(args.path),
        ring=KeyRing.from_settings(settings),
        confirmed=args.yes,
        progress=_progress("restore"),
    )
    # Into the restored database, right after (a file replaced whole has no transaction to share).
    async with TokenStore.open(settings, actor="cli") as store:
        detail = {"rows": report.rows, "from": report.restored_from.name, "saved_as": report.previous_saved_to.name}
        await store.record([Event(RESTORED, detail=detail)])
    return EXIT_OK


async def _check(args: argparse.Namespace) -> int:
    import httpx

    from service.jobs.check import check_tokens
    from service.vault import TokenStore

    settings = _settings(args)
    async with TokenStore.open(settings, actor="cli") as store:
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
    print_keys("unreadable", report.unreadable, width=10)
    print_keys("dead", [f"{key}  ({report.reasons[key]})" for key in report.dead], width=10)
    print_keys("expiring", [f"{key}  ({report.reasons[key]})" for key in report.expiring], width=10)
    print_keys("unknown", [f"{key}  ({why})" for key, why in report.unknown], width=10)
    say(*report.table().splitlines())
    return _status(report.ok)


async def _sweep(args: argparse.Namespace) -> int:
    import httpx

    from service.sweep import sweep_when_free
    from service.vault import TokenStore

    settings = _settings(args)
    timeout = httpx.Timeout(settings.http_timeout_seconds)
    async with TokenStore.open(settings, actor="sweep") as store, httpx.AsyncClient(timeout=timeout) as client:
        report = await sweep_when_free(store, client, page_checks=args.page_checks)
    for domain in report.refused:
        print(f"{'refused':<10}  {domain}  (needs reconnecting: Shopify refused its refresh token)")
    for page_id, state in report.changed:
        print(f"{'changed':<10}  Page {page_id}  ({state})")
    print(report.line(), file=sys.stderr)
    return EXIT_OK


# --- registration --------------------------------------------------------------------------------


def _batch_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per transaction")


def add_commands(commands: Any, *, keys: Any, tokens: Any) -> None:
    """`commands`, `keys` and `tokens` are argparse sub-parser groups of `salesbot`, `salesbot keys`
    and `salesbot tokens`. Each added parser sets `handler`, a callable(args) -> exit status."""

    rotate = add_command(
        keys, "rotate", "re-encrypt every stored value under the first TOKEN_ENCRYPTION_KEYS key", _handler(_rotate)
    )
    rotate.add_argument("--dry-run", action="store_true", help="count what would be rewritten; write nothing")
    _batch_size(rotate)

    check = add_command(
        tokens, "check", "decrypt every row; with --online ask the providers if tokens work", _handler(_check)
    )
    check.add_argument("--online", action="store_true", help="ask Facebook and Shopify; mark dead tokens expired")
    _batch_size(check)

    sweep = add_command(
        commands,
        "sweep",
        "one round of the sweep, for cron: refresh due Shopify tokens, check Pages with Facebook",
        _handler(_sweep),
    )
    sweep.add_argument("--page-checks", type=int, default=200, help="Pages to ask Facebook about in this round")

    env = add_command(
        commands, "import-env", "store the tokens kept in environment variables or a .env file", _handler(_import_env)
    )
    env.add_argument(
        "--env-file",
        dest="source_env_file",
        metavar="PATH",
        help="read token variables from this file too (default: the settings file, when there is one)",
    )
    env.add_argument("--dry-run", action="store_true", help="report what would be imported; write nothing")
    env.add_argument("--overwrite", action="store_true", help="replace stored values that differ")

    db = add_command(
        commands, "import-db", "copy another tokens.db into this store under the current key", _handler(_import_db)
    )
    db.add_argument("path", metavar="PATH", help="the other tokens.db (opened read-only)")
    db.add_argument(
        "--secret-env",
        metavar="VAR",
        help="variable holding that database's STATE_TOKEN_SECRET (default: our own STATE_TOKEN_SECRET)",
    )
    db.add_argument("--dry-run", action="store_true", help="report what would be imported; write nothing")
    db.add_argument("--overwrite", action="store_true", help="replace stored values that differ")
    _batch_size(db)

    backup = add_command(
        commands, "backup", "consistent copy of the live SQLite store (mode 0600); never overwrites", _handler(_backup)
    )
    backup.add_argument("path", metavar="PATH", help="where to write the copy (must not exist)")

    restore = add_command(
        commands, "restore", "replace the SQLite store with a backup (saves the current one first)", _handler(_restore)
    )
    restore.add_argument("path", metavar="PATH", help="the backup to restore")
    restore.add_argument("--yes", action="store_true", help="confirm: tokens written since the backup are lost")
