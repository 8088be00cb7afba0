"""The `salesbot` command, run as a user runs it: a subprocess reading the environment and .env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from tests.conftest import PRIMARY_KEY, STATE_SECRET

ROOT = Path(__file__).resolve().parent.parent


def salesbot(*args: str, cwd: Path, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("STATE_TOKEN", "TOKEN_", "DATABASE"))}
    env.update(environ or {})
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "service", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
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
