"""The `salesbot` command: serve, demo, init, migrate, downgrade, tokens, keys and the operator jobs.

Every command reads the same settings as the service (environment, then .env). Every failure is one
line on stderr and an exit status (1: failed, 2: refused or misused), never a traceback. Modules are
imported inside the commands that need them, so `--help` and `keys generate` start fast. See
DESIGN.md, "The command line".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.command_line import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CommandFailed,
    HelpWithDefaults,
    Parser,
    add_command,
    positive,
    run_async,
)
from service.printable import say

if TYPE_CHECKING:
    from service.settings import Settings

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# ServiceError codes that mean "the command was asked for something it must not do": exit 2.
USAGE_CODES = {"settings_invalid", "invalid_revision"}
logger = logging.getLogger("salesbot")


def _settings(args: argparse.Namespace) -> Settings:
    from service.settings import Settings

    return Settings.load(args.env_file)


def _keyring(settings: Settings) -> Any:
    from service.crypto import KeyRing

    return KeyRing.from_settings(settings)


# --- schema --------------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    from service import migrate
    from service.security import check_secret, warn_insecure_files

    settings = _settings(args)
    warn_insecure_files(settings)
    check_secret(settings)
    say(migrate.upgrade(settings.database_url, _keyring(settings), args.revision).summary())
    return EXIT_OK


def cmd_downgrade(args: argparse.Namespace) -> int:
    """Roll back; a downgrade that deletes token data needs --yes and, on SQLite, first saves a copy."""
    from service import migrate
    from service.db import create_engine, sqlite_file

    settings = _settings(args)

    async def current() -> str | None:
        engine = create_engine(settings.database_url)
        try:
            return await migrate.current_revision(engine)
        finally:
            await engine.dispose()

    before = asyncio.run(current())
    target = migrate.downgrade_target(before, args.revision)
    lost = migrate.token_data_lost(migrate.revisions_between(before, target))
    if lost and sqlite_file(settings.database_url) is not None:
        if not args.yes:
            raise CommandFailed(
                f"Downgrading to {target or 'base'} deletes {'; '.join(lost)}: pass --yes to go ahead "
                "(a copy of the database is saved beside it first). Nothing was changed.",
                EXIT_USAGE,
            )
        say(f"Saved the database as {_save_before_downgrade(settings.database_url)} first.", file=sys.stderr)
    elif lost:
        if not args.yes:
            raise CommandFailed(
                f"Downgrading to {target or 'base'} deletes {'; '.join(lost)}: take a pg_dump first, then pass "
                "--yes to go ahead. Nothing was changed.",
                EXIT_USAGE,
            )
        say("PostgreSQL: no copy was made here (pg_dump is the backup).", file=sys.stderr)
    say(migrate.downgrade(settings.database_url, _keyring(settings), target or "base").summary())
    return EXIT_OK


def _save_before_downgrade(database_url: str) -> Path:
    from datetime import UTC, datetime

    from service.db import sqlite_file
    from service.jobs import JobError
    from service.jobs.backup import backup

    live = sqlite_file(database_url)
    assert live is not None
    saved = live.with_name(f"{live.name}.before-downgrade-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}")
    try:
        return asyncio.run(backup(database_url, saved)).path
    except JobError as error:
        raise CommandFailed(f"No copy could be saved ({error}); nothing was changed.") from None


# --- tokens --------------------------------------------------------------------------------------


def _value_from_stdin(key: str) -> str:
    # On a terminal, a prompt without echo; otherwise the piped value, less the newline echo adds.
    if sys.stdin.isatty():
        return getpass.getpass(f"Value for {key} (not shown): ")
    return sys.stdin.read().removesuffix("\n").removesuffix("\r")


async def _tokens_set(args: argparse.Namespace) -> int:
    from service.vault import TokenStore

    value = _value_from_stdin(args.key) if args.value == "-" else args.value
    async with TokenStore.open(_settings(args), actor="cli") as store:
        await store.check_keys()
        await store.store_token(args.key, value, type=args.type)
    say(f"Stored {args.key}.", file=sys.stderr)
    return EXIT_OK


async def _tokens_get(args: argparse.Namespace) -> int:
    from service.vault import TokenStore

    async with TokenStore.open(_settings(args)) as store:
        await store.check_keys()
        value = await store.get_token(args.key)
    if value is None:
        raise CommandFailed(f"No token is stored under {args.key!r}.")
    print(value)
    return EXIT_OK


def _when(moment: Any) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _tokens_list(args: argparse.Namespace) -> int:
    from service import keys
    from service.models import utcnow
    from service.vault import TokenStore, health

    async with TokenStore.open(_settings(args)) as store:
        records = await store.list_tokens(args.type)
    listed = []
    now = utcnow()
    for record in records:
        info = keys.describe_key(record.key)
        # A connection's health, as the connections page says it (service/vault/health.py); entries and
        # keys outside the vocabulary have none.
        found = health.of_record(record, now) if health.kind_of(record.key) and record.type == "token" else None
        listed.append(
            {
                "key": record.key,
                "type": record.type,
                "provider": record.provider or (info.provider if info is not None else None),
                "account": record.account_uuid,
                "expires_at": _when(record.expires_at),
                "scopes": [scope for scope in (record.scopes or "").split(",") if scope],
                "name": record.name,  # the shop's, Page's or Facebook user's name, where the provider gave one
                "updated_at": _when(record.updated_at),
                "health": found.state if found else None,
                "reason": found.reason if found else None,
                "health_until": _when(found.until) if found else None,
                "checked_at": _when(record.checked_at),
                "refresh_failures": record.refresh_failures or 0,
                "refresh_retry_at": _when(record.refresh_retry_at),
            }
        )
    if args.json:
        print(json.dumps(listed, indent=2))
    else:
        _print_table(listed)
    say(f"{len(records)} row(s); values are never shown.", file=sys.stderr)
    return EXIT_OK


def _print_table(listed: list[dict[str, Any]]) -> None:
    rows = [("KEY", "TYPE", "PROVIDER", "ACCOUNT", "EXPIRES", "HEALTH", "SCOPES")]
    for item in listed:
        health = item["health"] or "-"
        rows.append(
            (
                item["key"],
                item["type"],
                item["provider"] or "-",
                item["account"] or "-",
                (item["expires_at"] or "-").replace("T", " ").rstrip("Z"),
                f"{health} ({item['reason']})" if item["reason"] else health,
                ",".join(item["scopes"]) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


async def _tokens_delete(args: argparse.Namespace) -> int:
    from service.vault import TokenStore

    async with TokenStore.open(_settings(args), actor="cli") as store:
        deleted = await store.delete_token(args.key)
    if not deleted:
        raise CommandFailed(f"No token is stored under {args.key!r}; nothing deleted.")
    say(f"Deleted {args.key}.", file=sys.stderr)
    return EXIT_OK


# --- API keys (service/api_keys.py) --------------------------------------------------------------


async def _api_keys(args: argparse.Namespace) -> int:
    from service import api_keys
    from service.vault import TokenStore

    async with TokenStore.open(_settings(args), actor="cli") as store:
        try:
            if args.api_keys_command == "create":
                made, key = await api_keys.create(store, name=args.name, scope=args.scope)
                print(key)  # the one time the key is shown, alone on stdout: `KEY=$(salesbot api-keys create ...)`
                said = f"API key {made.name} ({made.prefix}, scope {made.scope}) created"
                say(f"{said}: keep it now, it is not shown again.", file=sys.stderr)
            elif args.api_keys_command == "revoke":
                revoked, now = await api_keys.revoke(store, args.which)
                done = "revoked" if now else "was revoked already"
                say(f"API key {revoked.name} ({revoked.prefix}) {done}.", file=sys.stderr)
            else:
                listed = await api_keys.listing(store)
                if args.json:
                    print(json.dumps([key.as_dict() for key in listed], indent=2))
                else:
                    _print_api_keys(listed)
                say(f"{len(listed)} key(s); keys are never shown.", file=sys.stderr)
        except api_keys.Refused as refusal:
            raise CommandFailed(str(refusal), EXIT_USAGE) from None
    return EXIT_OK


def _print_api_keys(listed: list[Any]) -> None:
    rows = [("NAME", "PREFIX", "SCOPE", "CREATED", "LAST USED", "CALLS", "REVOKED")]
    for key in listed:
        rows.append(
            (
                key.name,
                key.prefix,
                key.scope,
                _when(key.created_at) or "-",
                _when(key.last_used_at) or "never",
                str(key.calls),
                _when(key.revoked_at) or "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    say(*("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows))


# --- keys, init ----------------------------------------------------------------------------------


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet  # not service.crypto: that would load SQLAlchemy

    print(Fernet.generate_key().decode())
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    """Write a private .env with fresh secrets, for a first run; never overwrite one."""
    import secrets

    from cryptography.fernet import Fernet

    path = Path(args.env_file or ".env")
    if path.exists():
        raise CommandFailed(f"{path} already exists; not touching it.")
    content = (
        "# Written by `salesbot init`. See .env.example for every setting.\n"
        f"STATE_TOKEN_SECRET={secrets.token_urlsafe(32)}\n"
        f"TOKEN_ENCRYPTION_KEYS={Fernet.generate_key().decode()}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    say(f"Wrote {path} (mode 0600) with a new STATE_TOKEN_SECRET and encryption key.", file=sys.stderr)
    return EXIT_OK


# --- serving -------------------------------------------------------------------------------------


class Terminated(Exception):
    """SIGTERM, once uvicorn has drained what was in flight: unwind, so that clean-up runs."""


def _on_sigterm(_signal: int, _frame: Any) -> None:
    raise Terminated


def _stop_cleanly_on_sigterm() -> None:
    # uvicorn re-raises SIGTERM after its graceful shutdown; Python's default would end the process
    # there, before any `finally` (the demo's folder, serve's metrics folder) could run.
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)


def _configure_logging(level: str, log_format: str) -> dict[str, Any]:
    from service import logs

    return logs.configure(level, log_format)


def _check_store(settings: Settings) -> None:
    """Before listening, each in one line rather than a traceback or a merchant's first failure: the
    database answers, its schema is at head, and a key in the ring opens the newest stored value."""
    from service.vault import TokenStore

    async def check() -> None:
        async with TokenStore.open(settings) as store:
            await store.check_keys()

    asyncio.run(check())


def _check_webhook(settings: Settings, host: str, port: int) -> None:
    from service.events.webhook import points_at_service

    if settings.events_webhook_url and points_at_service(settings.events_webhook_url, host, port):
        raise CommandFailed(
            f"EVENTS_WEBHOOK_URL points at this service itself ({host}:{port}): give the address of the team's "
            "own receiver.",
            EXIT_USAGE,
        )


def warn_missing_providers(settings: Settings) -> None:
    missing = settings.missing_provider_settings
    if missing:
        logger.warning(
            "Not set: %s, so those connect buttons answer 503 not_configured. To click through both flows "
            "with local stand-ins instead, run `salesbot demo`.",
            ", ".join(missing),
        )


def cmd_serve(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    # Every worker writes its metrics here and any worker's /metrics reads them all. Set before anything
    # imports prometheus_client, which picks its storage at import; removed however serve ends.
    metrics_dir = tempfile.mkdtemp(prefix="salesbot-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return _serve(args)
    except Terminated:
        return EXIT_OK
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(args: argparse.Namespace) -> int:
    from service.app import ENV_FILE_VARIABLE
    from service.security import check_secret, warn_insecure_files

    settings = _settings(args)
    log_config = _configure_logging(args.log_level, args.log_format or settings.log_format)
    warn_insecure_files(settings)  # a .env or database other users can read: say so, naming the file
    check_secret(settings)
    _check_webhook(settings, args.host, args.port)
    _check_store(settings)  # a wrong key stops here, in one line, not at a merchant's first token
    warn_missing_providers(settings)
    if args.metrics_port is not None:
        _serve_metrics(args.metrics_port)
    # The workers load the app themselves (app_from_environment), from the same settings file.
    os.environ[ENV_FILE_VARIABLE] = str(Path(args.env_file).resolve()) if args.env_file else ""
    _stop_cleanly_on_sigterm()
    _uvicorn("service.app:app_from_environment", args, log_config, factory=True, workers=args.workers)
    return EXIT_OK


def _uvicorn(app: Any, args: argparse.Namespace, log_config: dict[str, Any], **more: Any) -> None:
    import uvicorn

    # uvicorn's access log prints query strings, which carry OAuth codes: ours (app.ContainErrors) does not.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=log_config,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=args.graceful_timeout,
        **more,
    )


def _serve_metrics(port: int) -> None:
    """Every worker's metrics on 127.0.0.1:port (no token: loopback only), from serve's own process."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(port, addr="127.0.0.1", registry=registry)
    logger.info("metrics on http://127.0.0.1:%d/metrics", port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from service.demo import create_demo_app

    if not _is_loopback(args.host) and not args.i_know_this_is_public:
        raise CommandFailed(
            f"the demo hands out tokens and its webhook buttons need no login, so it serves on loopback only "
            f"(127.0.0.1, ::1); to serve it on {args.host} anyway, add --i-know-this-is-public.",
            EXIT_USAGE,
        )
    log_config = _configure_logging(args.log_level, args.log_format or "text")
    _stop_cleanly_on_sigterm()
    try:
        with tempfile.TemporaryDirectory(prefix="salesbot-demo-") as data_dir:
            app, _settings_used = create_demo_app(args.host, args.port, Path(data_dir))
            say(
                f"salesbot demo: open http://{args.host}:{args.port}/ (Shopify and Facebook are local stand-ins; "
                "data is thrown away on exit).",
                file=sys.stderr,
            )
            say(
                f"salesbot demo: a bot process reads the demo's data with the settings in {app.state.bot_env} "
                "(e.g. TokenStore.open(Settings.load(that path))).",
                file=sys.stderr,
            )
            _uvicorn(app, args, log_config)
    except Terminated:
        pass
    return EXIT_OK


# --- parser --------------------------------------------------------------------------------------


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on")
    parser.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS, help="log level")
    parser.add_argument(
        "--log-format",
        type=str.lower,
        choices=("text", "json"),
        help="text lines, or one JSON object a line (default: LOG_FORMAT, else text)",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=positive(float),
        default=20.0,
        metavar="SECONDS",
        help="on SIGTERM or Ctrl+C, how long requests in flight may finish before they are cut",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="salesbot", description=__doc__.splitlines()[0], formatter_class=HelpWithDefaults)
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help="settings file read after the environment; it must exist (default: ./.env, when there is one)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = add_command(commands, "serve", "run the service under uvicorn", cmd_serve)
    _server_options(serve)
    serve.add_argument(
        "--workers", type=positive(int), default=1, help="processes serving (uvicorn's manager restarts one that dies)"
    )
    serve.add_argument(
        "--metrics-port",
        type=positive(int),
        metavar="PORT",
        help="serve /metrics on 127.0.0.1:PORT, no token needed (otherwise only with METRICS_TOKEN, on --port)",
    )
    demo = add_command(commands, "demo", "the service with local Shopify and Facebook stand-ins; no accounts", cmd_demo)
    _server_options(demo)
    demo.add_argument(
        "--i-know-this-is-public", action="store_true", help="allow a --host other than loopback (127.0.0.1, ::1)"
    )
    add_command(commands, "init", "write a .env (or --env-file PATH) with fresh secrets; never overwrites", cmd_init)

    migrate = add_command(commands, "migrate", "upgrade the schema (adopts a seed tokens.db in place)", cmd_migrate)
    migrate.add_argument("revision", nargs="?", default="head", metavar="REV", help="revision to upgrade to")
    downgrade = add_command(
        commands, "downgrade", "roll the schema back to REV; asks for --yes before deleting tokens", cmd_downgrade
    )
    downgrade.add_argument("revision", metavar="REV", help="a revision id, base, or -N (N revisions back)")
    downgrade.add_argument(
        "--yes", action="store_true", help="confirm a downgrade that deletes token data (SQLite: a copy is saved first)"
    )

    tokens = add_command(commands, "tokens", "stored tokens: set, get, list, delete, check").add_subparsers(
        dest="tokens_command", required=True, metavar="ACTION"
    )
    token_set = add_command(tokens, "set", "store a value under a key", run_async(_tokens_set))
    token_set.add_argument("key")
    token_set.add_argument(
        "value", nargs="?", default="-", help="omitted or -: read from standard input (a prompt without echo)"
    )
    token_set.add_argument("--type", choices=("token", "uuid"), default="token", help="what the value is")
    token_get = add_command(tokens, "get", "print a key's plaintext value; exit 1 when absent", run_async(_tokens_get))
    token_get.add_argument("key")
    token_list = add_command(
        tokens, "list", "keys with provider, account, expiry and scopes; never values", run_async(_tokens_list)
    )
    token_list.add_argument("--type", choices=("token", "uuid"), help="only rows of this type (default: all)")
    token_list.add_argument("--json", action="store_true", help="print a JSON array, for scripts")
    token_delete = add_command(tokens, "delete", "delete a key", run_async(_tokens_delete))
    token_delete.add_argument("key")

    keys = add_command(commands, "keys", "encryption keys: generate, rotate").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    add_command(keys, "generate", "print a new Fernet key", cmd_keys_generate)

    api = add_command(commands, "api-keys", "keys of the HTTP API (docs/api.md): create, list, revoke").add_subparsers(
        dest="api_keys_command", required=True, metavar="ACTION"
    )
    api_create = add_command(api, "create", "make a key and print it once", run_async(_api_keys))
    api_create.add_argument("--name", required=True, help="what the key is for, unique (letters, digits, . _ -)")
    api_create.add_argument(
        "--scope", required=True, choices=("read", "proxy"), help="read: tokens; proxy: the proxies and health only"
    )
    api_list = add_command(
        api, "list", "keys with scope, creation, last use and calls; never the keys", run_async(_api_keys)
    )
    api_list.add_argument("--json", action="store_true", help="print a JSON array, for scripts")
    api_revoke = add_command(api, "revoke", "refuse a key from now on, on every instance", run_async(_api_keys))
    api_revoke.add_argument("which", metavar="NAME|PREFIX", help="the key's name or prefix (from `api-keys list`)")

    from service.events import commands as events_commands
    from service.jobs.commands import add_commands

    add_commands(commands, keys=keys, tokens=tokens)
    events_commands.add_commands(commands)
    return parser


def _one_line(error: BaseException, args: argparse.Namespace) -> str:
    """What to print for an exception no command turned into a message: a database problem described,
    else the exception's class (its text may hold a URL or a value)."""
    from service.db import describe_database_error

    described = None
    with contextlib.suppress(Exception):
        described = describe_database_error(error, _settings(args).database_url)
    return described or f"failed with {type(error).__name__} (set SALESBOT_TRACEBACK=1 to see where)."


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from service.errors import ServiceError
    from service.jobs import JobError

    try:
        return args.handler(args)
    except ServiceError as error:
        say(f"salesbot: {error.message}", file=sys.stderr)
        return EXIT_USAGE if error.code in USAGE_CODES else EXIT_FAILED
    except (CommandFailed, JobError) as failure:
        say(f"salesbot: {failure}", file=sys.stderr)
        return failure.status
    except KeyboardInterrupt:
        say("salesbot: interrupted.", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("SALESBOT_TRACEBACK"):
            raise
        say(f"salesbot: {_one_line(error, args)}", file=sys.stderr)
        return EXIT_FAILED
