"""The `salesbot` command: serve, demo, migrate, tokens, keys.

Every command reads the same settings as the service (environment, then .env). Failures the user can
act on end in one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import ipaddress
import logging
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from service.crypto import KeyRing, generate_key
from service.errors import ServiceError
from service.security import warn_insecure_files
from service.settings import Settings
from service.store import TOKEN_TYPES, TokenStore

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandFailed(Exception):
    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_environ(env_file=args.env_file)


# --- commands ------------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    from service import migrate

    settings = _settings(args)
    warn_insecure_files(settings)
    migrate.upgrade(settings.database_url, KeyRing.from_settings(settings), args.revision)
    print(f"Database upgraded to {args.revision} ({migrate.head_revision()} is head).")
    return EXIT_OK


def _value_from_stdin(key: str) -> str:
    # On a terminal, a prompt without echo; otherwise the piped value, less the newline echo adds.
    if sys.stdin.isatty():
        return getpass.getpass(f"Value for {key} (not shown): ")
    return sys.stdin.read().removesuffix("\n").removesuffix("\r")


async def _tokens_set(args: argparse.Namespace) -> int:
    value = _value_from_stdin(args.key) if args.value == "-" else args.value
    async with TokenStore.open(_settings(args)) as store:
        await store.check_keys()
        await store.store_token(args.key, value, type=args.type)
    print(f"Stored {args.key}.", file=sys.stderr)
    return EXIT_OK


async def _tokens_get(args: argparse.Namespace) -> int:
    async with TokenStore.open(_settings(args)) as store:
        await store.check_keys()
        value = await store.get_token(args.key)
    if value is None:
        raise CommandFailed(f"No token is stored under {args.key!r}.")
    print(value)
    return EXIT_OK


async def _tokens_list(args: argparse.Namespace) -> int:
    async with TokenStore.open(_settings(args)) as store:
        records = await store.list_tokens(args.type)
    rows = [("KEY", "TYPE", "ACCOUNT", "UPDATED", "VALUE")]
    for record in records:
        updated = record.updated_at.strftime("%Y-%m-%d %H:%M:%S") if record.updated_at else "-"
        rows.append((record.key, record.type, record.account_uuid or "-", updated, "********"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"{len(records)} row(s).", file=sys.stderr)
    return EXIT_OK


async def _tokens_delete(args: argparse.Namespace) -> int:
    async with TokenStore.open(_settings(args)) as store:
        deleted = await store.delete_token(args.key)
    if not deleted:
        raise CommandFailed(f"No token is stored under {args.key!r}; nothing deleted.")
    print(f"Deleted {args.key}.", file=sys.stderr)
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    """Write a private .env with fresh secrets, for a first run; never overwrite one."""
    path = Path(args.env_file)
    if path.exists():
        raise CommandFailed(f"{path} already exists; not touching it.")
    content = (
        "# Written by `salesbot init`. See .env.example for every setting.\n"
        f"STATE_TOKEN_SECRET={secrets.token_urlsafe(32)}\n"
        f"TOKEN_ENCRYPTION_KEYS={generate_key()}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    print(f"Wrote {path} (mode 0600) with a new STATE_TOKEN_SECRET and encryption key.", file=sys.stderr)
    return EXIT_OK


def cmd_keys_generate(args: argparse.Namespace) -> int:
    print(generate_key())
    return EXIT_OK


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # At DEBUG, SQLAlchemy logs result rows, i.e. ciphertexts: never let --log-level debug reach it.
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)


async def _check_store(settings: Settings) -> None:
    async with TokenStore.open(settings) as store:
        await store.check_keys()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app

    settings = _settings(args)
    asyncio.run(_check_store(settings))  # a wrong key stops here, in one line, not at a merchant's first token
    _configure_logging(args.log_level)
    warn_insecure_files(settings)  # a .env or database other users can read: say so, naming the file
    # uvicorn's access log prints query strings, which carry OAuth codes: ours (app.ContainErrors) does not.
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return EXIT_OK


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    import uvicorn

    from service.demo import create_demo_app

    if not _is_loopback(args.host) and not args.i_know_this_is_public:
        raise CommandFailed(
            f"the demo hands out tokens and its webhook buttons need no login, so it serves on loopback only "
            f"(127.0.0.1, ::1); to serve it on {args.host} anyway, add --i-know-this-is-public.",
            EXIT_USAGE,
        )
    _configure_logging(args.log_level)
    with tempfile.TemporaryDirectory(prefix="salesbot-demo-") as data_dir:
        app, _settings_used = create_demo_app(args.host, args.port, Path(data_dir))
        print(
            f"salesbot demo: open http://{args.host}:{args.port}/ (Shopify and Facebook are local stand-ins; "
            "data is thrown away on exit).",
            file=sys.stderr,
        )
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return EXIT_OK


# --- parser --------------------------------------------------------------------------------------


def _run_async(command: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    return lambda args: asyncio.run(command(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="salesbot", description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", default=".env", help="settings file read after the environment (default .env)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the service under uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5000)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(handler=cmd_serve)

    commands.add_parser("init", help="write a .env with fresh secrets (never overwrites)").set_defaults(
        handler=cmd_init
    )

    demo = commands.add_parser("demo", help="serve with local Shopify and Facebook stand-ins, no accounts needed")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=5000)
    demo.add_argument("--log-level", default="info")
    demo.add_argument(
        "--i-know-this-is-public", action="store_true", help="allow a --host other than loopback (127.0.0.1, ::1)"
    )
    demo.set_defaults(handler=cmd_demo)

    migrate = commands.add_parser("migrate", help="upgrade the database schema (adopts a seed tokens.db in place)")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(handler=cmd_migrate)

    tokens = commands.add_parser("tokens", help="read and write stored tokens").add_subparsers(
        dest="tokens_command", required=True, metavar="ACTION"
    )
    token_set = tokens.add_parser("set", help="store a value under a key")
    token_set.add_argument("key")
    token_set.add_argument(
        "value", nargs="?", default="-", help="omitted or -: read from standard input (a prompt without echo)"
    )
    token_set.add_argument("--type", choices=TOKEN_TYPES, default="token")
    token_set.set_defaults(handler=_run_async(_tokens_set))
    token_get = tokens.add_parser("get", help="print a key's plaintext value (exit 1 when absent)")
    token_get.add_argument("key")
    token_get.set_defaults(handler=_run_async(_tokens_get))
    token_list = tokens.add_parser("list", help="list keys, types, accounts and update times; values masked")
    token_list.add_argument("--type", choices=TOKEN_TYPES)
    token_list.set_defaults(handler=_run_async(_tokens_list))
    token_delete = tokens.add_parser("delete", help="delete a key")
    token_delete.add_argument("key")
    token_delete.set_defaults(handler=_run_async(_tokens_delete))

    keys = commands.add_parser("keys", help="encryption keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    keys.add_parser("generate", help="print a new Fernet key").set_defaults(handler=cmd_keys_generate)

    from service.jobs.commands import add_commands

    add_commands(commands, keys=keys, tokens=tokens)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ServiceError as error:
        print(f"salesbot: {error.message}", file=sys.stderr)
        return EXIT_USAGE if error.code == "settings_invalid" else EXIT_FAILED
    except CommandFailed as failure:
        print(f"salesbot: {failure}", file=sys.stderr)
        return failure.status
    except KeyboardInterrupt:
        print("salesbot: interrupted.", file=sys.stderr)
        return 130
