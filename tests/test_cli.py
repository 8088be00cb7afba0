"""The `salesbot` command, run as a user runs it: a subprocess reading the environment and .env (and, for
`tokens set`, a pipe or a terminal)."""

from __future__ import annotations

import argparse
import os
import pty
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from service.cli import build_parser
from tests.conftest import PRIMARY_KEY, STATE_SECRET

ROOT = Path(__file__).resolve().parent.parent


def cli_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("STATE_TOKEN", "TOKEN_", "DATABASE"))}
    env.update(environ or {})
    env["PYTHONPATH"] = str(ROOT)
    return env


def salesbot(
    *args: str, cwd: Path, environ: dict[str, str] | None = None, input: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,
        env=cli_env(environ),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_token_commands_through_a_dot_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"STATE_TOKEN_SECRET={STATE_SECRET}\nTOKEN_ENCRYPTION_KEYS={PRIMARY_KEY}\n")
    assert salesbot("migrate", cwd=tmp_path).returncode == 0
    assert (tmp_path / "data" / "tokens.db").exists()  # the embedded default, relative to where it runs

    assert salesbot("tokens", "set", "SHOPIFY_ACCESS_TOKEN_acme", "shpat_cli_value", cwd=tmp_path).returncode == 0
    got = salesbot("tokens", "get", "SHOPIFY_ACCESS_TOKEN_acme", cwd=tmp_path)
    assert (got.returncode, got.stdout) == (0, "shpat_cli_value\n")

    listed = salesbot("tokens", "list", cwd=tmp_path)
    assert listed.returncode == 0
    assert "SHOPIFY_ACCESS_TOKEN_acme" in listed.stdout and "shpat_cli_value" not in listed.stdout

    assert salesbot("tokens", "delete", "SHOPIFY_ACCESS_TOKEN_acme", cwd=tmp_path).returncode == 0
    missing = salesbot("tokens", "get", "SHOPIFY_ACCESS_TOKEN_acme", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "SHOPIFY_ACCESS_TOKEN_acme" in missing.stderr and "Traceback" not in missing.stderr


def test_missing_secret_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = salesbot("tokens", "list", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "STATE_TOKEN_SECRET" in result.stderr
    assert "Traceback" not in result.stderr


def test_unmigrated_database_says_what_to_run(tmp_path: Path) -> None:
    result = salesbot("tokens", "get", "K", cwd=tmp_path, environ={"STATE_TOKEN_SECRET": STATE_SECRET})
    assert result.returncode == 1 and "salesbot migrate" in result.stderr and "Traceback" not in result.stderr


def test_empty_value_is_refused(tmp_path: Path) -> None:
    environ = {"STATE_TOKEN_SECRET": STATE_SECRET}
    assert salesbot("migrate", cwd=tmp_path, environ=environ).returncode == 0
    result = salesbot("tokens", "set", "KEY", "", cwd=tmp_path, environ=environ)
    assert result.returncode == 1 and "non-empty" in result.stderr


def test_keys_generate_prints_a_fernet_key(tmp_path: Path) -> None:
    result = salesbot("keys", "generate", cwd=tmp_path)
    assert result.returncode == 0
    Fernet(result.stdout.strip().encode())  # raises if it is not a key
    assert result.stdout != salesbot("keys", "generate", cwd=tmp_path).stdout


def test_init_writes_a_private_env_once(tmp_path: Path) -> None:
    assert salesbot("init", cwd=tmp_path).returncode == 0
    env_file = tmp_path / ".env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    first = env_file.read_text()
    assert "STATE_TOKEN_SECRET=" in first and "TOKEN_ENCRYPTION_KEYS=" in first
    again = salesbot("init", cwd=tmp_path)
    assert again.returncode == 1 and env_file.read_text() == first
    assert salesbot("migrate", cwd=tmp_path).returncode == 0


# --- start-up and help -----------------------------------------------------------------------------

DATABASE_PACKAGES = ("sqlalchemy", "alembic", "aiosqlite", "asyncpg")
LOADED = """
import sys
from service.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
finally:
    print(sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[0].split(","))), file=sys.stderr)
"""


def packages_loaded_by(*args: str, cwd: Path) -> str:
    code = LOADED.replace("sys.argv[0]", repr(",".join(DATABASE_PACKAGES)))
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    return result.stderr.strip().splitlines()[-1]


def test_help_and_keys_generate_load_no_database_code(tmp_path: Path) -> None:
    assert packages_loaded_by("--help", cwd=tmp_path) == "[]"
    assert packages_loaded_by("keys", "generate", cwd=tmp_path) == "[]"
    # The probe itself can see them: a command that needs the database loads them.
    assert "sqlalchemy" in packages_loaded_by("downgrade", "-1", cwd=tmp_path)


def test_top_level_help_lists_every_command(tmp_path: Path) -> None:
    top = salesbot("--help", cwd=tmp_path).stdout
    for command in ("serve", "demo", "init", "migrate", "downgrade", "tokens", "keys", "import-env", "import-db"):
        assert f"\n    {command} " in top, command
    for command in ("backup", "restore"):
        assert f"\n    {command} " in top, command
    for group, actions in (("tokens", ("set", "get", "list", "delete", "check")), ("keys", ("generate", "rotate"))):
        listed = salesbot(group, "--help", cwd=tmp_path).stdout
        assert all(f"\n    {action} " in listed for action in actions), listed
        assert all(action in top for action in actions)  # named on the top-level line too


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found.extend(all_parsers(child))
    return found


def test_every_option_says_what_it_does_and_its_default() -> None:
    for parser in all_parsers(build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
                continue
            assert action.help, (parser.prog, action.option_strings)
            if action.default not in (None, False):
                assert f"(default: {action.default})" in " ".join(text.split()), (parser.prog, action.option_strings)


# --- tokens list --------------------------------------------------------------------------------------


def test_tokens_list_shows_provider_account_expiry_and_scopes_and_json(tmp_path: Path) -> None:
    import json

    environ = {"STATE_TOKEN_SECRET": STATE_SECRET, "TOKEN_ENCRYPTION_KEYS": PRIMARY_KEY}
    assert salesbot("migrate", cwd=tmp_path, environ=environ).returncode == 0
    account = "6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b"
    store_rows = f"""
import asyncio
from datetime import datetime, timezone
from service import Settings, TokenStore
async def main():
    async with TokenStore.open(Settings.load()) as store:
        await store.store_token("USER_UUID_acme", "{account}", type="uuid")
        await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat_secret_value", scopes="read_orders,read_products",
                                expires_at=datetime(2036, 12, 24, 18, 30, tzinfo=timezone.utc))
        await store.store_token("FACEBOOK_ACCESS_TOKEN_101", "EAA_secret_value")
        await store.mark_token_dead("FACEBOOK_ACCESS_TOKEN_101", "EAA_secret_value", reason="password_changed")
asyncio.run(main())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATE_TOKEN", "TOKEN_", "DATABASE"))}
    subprocess.run([sys.executable, "-c", store_rows], cwd=tmp_path, env={**env, **environ}, check=True, timeout=60)

    table = salesbot("tokens", "list", cwd=tmp_path, environ=environ)
    assert table.returncode == 0 and "shpat_secret_value" not in table.stdout and "EAA_secret" not in table.stdout
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["KEY", "TYPE", "PROVIDER", "ACCOUNT", "EXPIRES", "HEALTH", "SCOPES"]
    # Rows in key order: the Page (marked dead, with its reason), the store, the store's link.
    page_row = ["FACEBOOK_ACCESS_TOKEN_101", "token", "facebook", "-", "-", "needs_reconnect", "(password_changed)"]
    assert rows[0].split() == [*page_row, "-"]
    assert rows[1].split() == [
        "SHOPIFY_ACCESS_TOKEN_acme",
        "token",
        "shopify",
        account,
        "2036-12-24",
        "18:30:00",
        "ok",
        "read_orders,read_products",
    ]
    listed = json.loads(salesbot("tokens", "list", "--json", cwd=tmp_path, environ=environ).stdout)
    assert listed[1] | {"updated_at": None} == {
        "key": "SHOPIFY_ACCESS_TOKEN_acme",
        "type": "token",
        "provider": "shopify",
        "account": account,
        "expires_at": "2036-12-24T18:30:00Z",
        "scopes": ["read_orders", "read_products"],
        "name": None,
        "updated_at": None,
        "health": "ok",
        "reason": None,
        "health_until": None,
        "checked_at": None,
        "refresh_failures": 0,
        "refresh_retry_at": None,
    }
    assert (listed[0]["health"], listed[0]["reason"]) == ("needs_reconnect", "password_changed")
    assert listed[2]["key"] == "USER_UUID_acme" and listed[2]["type"] == "uuid" and listed[2]["account"] == account
    assert listed[2]["health"] is None  # a link is no connection


# --- .env -----------------------------------------------------------------------------------------------


def test_the_service_and_the_jobs_read_dot_env_alike(tmp_path: Path) -> None:
    from tests.seed_loader import SEED_FIXTURE_SECRET, SEED_ROWS, copy_seed_database

    # The seed's secret, written as people write .env files: an export prefix and a comment after it.
    copy_seed_database(tmp_path / "data" / "tokens.db")
    (tmp_path / ".env").write_text(
        f"export STATE_TOKEN_SECRET={SEED_FIXTURE_SECRET} # the seed deployment's\n"
        f"TOKEN_ENCRYPTION_KEYS='{PRIMARY_KEY}'\n"
    )
    (tmp_path / ".env").chmod(0o600)
    adopted = salesbot("migrate", cwd=tmp_path)  # decrypting the seed's UUID rows needs the secret exactly
    assert adopted.returncode == 0 and "Adopted the seed's tokens table" in adopted.stdout, adopted.stderr
    other = copy_seed_database(tmp_path / "other" / "tokens.db")
    imported = salesbot("import-db", str(other), "--secret-env", "STATE_TOKEN_SECRET", cwd=tmp_path)
    assert imported.returncode == 0 and f"{len(SEED_ROWS)} unchanged" in imported.stderr, imported.stderr
# --- secrets off the command line --------------------------------------------------------------------


def dot_env(tmp_path: Path, key: str = PRIMARY_KEY) -> None:
    path = tmp_path / ".env"
    path.write_text(f"STATE_TOKEN_SECRET={STATE_SECRET}\nTOKEN_ENCRYPTION_KEYS={key}\n")
    path.chmod(0o600)  # as `salesbot init` writes it (serve warns about a readable one)


@pytest.mark.parametrize("form", [(), ("-",)])
def test_tokens_set_reads_the_value_from_standard_input(tmp_path: Path, form: tuple[str, ...]) -> None:
    dot_env(tmp_path)
    assert salesbot("migrate", cwd=tmp_path).returncode == 0
    stored = salesbot("tokens", "set", "SHOPIFY_ACCESS_TOKEN_acme", *form, cwd=tmp_path, input="shpat_piped_value\n")
    assert stored.returncode == 0, stored.stderr
    assert "shpat_piped_value" not in stored.stdout + stored.stderr
    got = salesbot("tokens", "get", "SHOPIFY_ACCESS_TOKEN_acme", cwd=tmp_path)
    assert got.stdout == "shpat_piped_value\n"  # the newline the pipe added is not part of the value


def test_tokens_set_on_a_terminal_prompts_without_echo(tmp_path: Path) -> None:
    dot_env(tmp_path)
    assert salesbot("migrate", cwd=tmp_path).returncode == 0
    pid, terminal = pty.fork()  # the child's controlling terminal is this pty, as in a shell
    if pid == 0:
        os.chdir(tmp_path)
        os.execve(
            sys.executable, [sys.executable, "-m", "service", "tokens", "set", "FACEBOOK_ACCESS_TOKEN_1"], cli_env()
        )
    screen = b""

    def read_until(done: bytes | None) -> None:
        nonlocal screen
        deadline = time.monotonic() + 60
        while done is None or done not in screen:
            assert time.monotonic() < deadline, screen
            if select.select([terminal], [], [], 1)[0]:
                try:
                    chunk = os.read(terminal, 1024)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    return
                screen += chunk

    read_until(b"(not shown): ")
    os.write(terminal, b"EAA-typed-secret\n")
    read_until(None)
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0, screen
    assert b"Value for FACEBOOK_ACCESS_TOKEN_1" in screen and b"EAA-typed-secret" not in screen
    assert salesbot("tokens", "get", "FACEBOOK_ACCESS_TOKEN_1", cwd=tmp_path).stdout == "EAA-typed-secret\n"


# --- a wrong key stops a command at once ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_key_that_opens_no_stored_value_stops_serve_and_commands_in_one_line(tmp_path: Path) -> None:
    dot_env(tmp_path)
    assert salesbot("migrate", cwd=tmp_path).returncode == 0
    assert salesbot("tokens", "set", "SHOPIFY_ACCESS_TOKEN_acme", "shpat_right_key", cwd=tmp_path).returncode == 0
    database = (tmp_path / "data" / "tokens.db").read_bytes()
    dot_env(tmp_path, key=Fernet.generate_key().decode())  # the operator pasted another key
    port = str(free_port())
    for command in (
        ("serve", "--port", port),
        ("tokens", "get", "SHOPIFY_ACCESS_TOKEN_acme"),
        ("tokens", "set", "SHOPIFY_ACCESS_TOKEN_other", "shpat_wrong_key"),
        ("import-env",),
    ):
        result = salesbot(*command, cwd=tmp_path, timeout=60)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.count("\n") == 1 and "TOKEN_ENCRYPTION_KEYS" in result.stderr, (command, result.stderr)
        assert "SHOPIFY_ACCESS_TOKEN_acme" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "data" / "tokens.db").read_bytes() == database  # nothing was written
    dot_env(tmp_path, key=f"{Fernet.generate_key().decode()},{PRIMARY_KEY}")  # the old key kept in the ring
    assert salesbot("tokens", "get", "SHOPIFY_ACCESS_TOKEN_acme", cwd=tmp_path).stdout == "shpat_right_key\n"


# --- the demo stays on loopback -------------------------------------------------------------------------


def test_demo_refuses_a_public_host_unless_told(tmp_path: Path) -> None:
    port = free_port()
    refused = salesbot("demo", "--host", "0.0.0.0", "--port", str(port), cwd=tmp_path, timeout=60)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "--i-know-this-is-public" in refused.stderr and "Traceback" not in refused.stderr
    command = [sys.executable, "-m", "service", "demo", "--host", "0.0.0.0", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--i-know-this-is-public"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the demo did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)  # polling until it listens, with a deadline
    finally:
        process.terminate()
        process.wait(timeout=30)
