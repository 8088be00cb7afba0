"""`alembic upgrade head` migrates the database the service uses, or refuses as `salesbot migrate` does.

Run as an operator runs them: the `alembic` and `salesbot` commands in a folder with a .env, or from
the repository root with `-x env_file=PATH`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from service import migrate
from tests.command import ROOT, alembic, assert_one_line_failure, salesbot
from tests.conftest import STATE_SECRET

INI = str(ROOT / "alembic.ini")


def revision_of(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    finally:
        connection.close()


def test_a_placeholder_secret_is_refused_with_the_line_salesbot_migrate_prints(tmp_path: Path) -> None:
    # The folder of the report: .env points at ./custom/prod.db, next to the .env.example placeholder.
    (tmp_path / ".env").write_text("STATE_TOKEN_SECRET=replace_with_secure_token\nTOKEN_DB_PATH=./custom/prod.db\n")
    from_alembic = alembic("-c", INI, "upgrade", "head", cwd=tmp_path)
    from_salesbot = salesbot("migrate", cwd=tmp_path)
    line = assert_one_line_failure(from_alembic, 2, "STATE_TOKEN_SECRET", "placeholder")
    assert line == assert_one_line_failure(from_salesbot, 2)
    assert sorted(path.name for path in tmp_path.iterdir()) == [".env"]  # neither ./data nor ./custom made


def test_alembic_migrates_the_database_named_in_dot_env_and_says_what_ran(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"STATE_TOKEN_SECRET={STATE_SECRET}\nTOKEN_DB_PATH=./custom/prod.db\n")
    (tmp_path / ".env").chmod(0o600)
    first = alembic("-c", INI, "upgrade", "head", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    head = migrate.head_revision()
    assert revision_of(tmp_path / "custom" / "prod.db") == head
    assert not (tmp_path / "data").exists()
    assert "Running upgrade  -> 0001" in first.stderr and f"-> {head}," in first.stderr
    again = alembic("-c", INI, "upgrade", "head", cwd=tmp_path)
    assert again.returncode == 0 and f"already at head ({head})" in again.stderr, again.stderr
    assert "Running upgrade" not in again.stderr
    down = alembic("-c", INI, "downgrade", "-1", cwd=tmp_path)
    assert down.returncode == 0 and f"Running downgrade {head} ->" in down.stderr, down.stderr


def test_from_the_repository_root_with_x_env_file(tmp_path: Path) -> None:
    settings_file = tmp_path / "prod.env"
    settings_file.write_text(f"STATE_TOKEN_SECRET={STATE_SECRET}\nTOKEN_DB_PATH={tmp_path / 'prod.db'}\n")
    settings_file.chmod(0o600)
    result = alembic("-x", f"env_file={settings_file}", "upgrade", "head", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert revision_of(tmp_path / "prod.db") == migrate.head_revision()
    missing = alembic("-x", f"env_file={tmp_path / 'nope.env'}", "upgrade", "head", cwd=ROOT)
    assert_one_line_failure(missing, 2, "nope.env", "no such file")


def test_a_closed_database_port_is_one_line(tmp_path: Path) -> None:
    from tests.demo_server import free_port

    port = free_port()
    environ = {"STATE_TOKEN_SECRET": STATE_SECRET, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/x"}
    result = alembic("-c", INI, "upgrade", "head", cwd=tmp_path, environ=environ)
    # alembic.ini's logging prints its INFO lines first; the failure itself is one line.
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].endswith(
        f"127.0.0.1:{port} (connection refused): is PostgreSQL running there?"
    )


def test_a_downgrade_that_deletes_tokens_needs_x_yes(tmp_path: Path) -> None:
    environ = {"STATE_TOKEN_SECRET": STATE_SECRET, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    assert alembic("-c", INI, "upgrade", "head", cwd=tmp_path, environ=environ).returncode == 0
    assert (
        salesbot("tokens", "set", "SHOPIFY_ACCESS_TOKEN_acme", "shpat_x", cwd=tmp_path, environ=environ).returncode == 0
    )
    refused = alembic("-c", INI, "downgrade", "base", cwd=tmp_path, environ=environ)
    assert refused.returncode == 2 and "every stored token" in refused.stderr and "-x yes=1" in refused.stderr
    assert revision_of(tmp_path / "cli.db") == migrate.head_revision()
    assert salesbot("tokens", "get", "SHOPIFY_ACCESS_TOKEN_acme", cwd=tmp_path, environ=environ).stdout == "shpat_x\n"
    confirmed = alembic("-c", INI, "-x", "yes=1", "downgrade", "base", cwd=tmp_path, environ=environ)
    assert confirmed.returncode == 0, confirmed.stderr
    tables = {name for (name,) in sqlite3.connect(tmp_path / "cli.db").execute("SELECT name FROM sqlite_master")}
    assert "tokens" not in tables
