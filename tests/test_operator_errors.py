"""Every operator error is one line on stderr and an exit status, never a traceback: through `salesbot` itself.

Exit 2: the command was given something it cannot use (a setting, an argument, a revision); exit 1:
it tried and the world said no (the database is not there). Database URLs are accepted as hosting
platforms write them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from service import migrate
from tests.command import assert_one_line_failure, salesbot
from tests.conftest import STATE_SECRET, TEST_DATABASE_URL
from tests.demo_server import free_port

SECRET = {"STATE_TOKEN_SECRET": STATE_SECRET}


def closed_port() -> int:
    return free_port()  # bound and released at once: nothing listens there


def test_a_database_url_that_is_not_a_url_is_refused(tmp_path: Path) -> None:
    result = salesbot("migrate", cwd=tmp_path, environ={**SECRET, "DATABASE_URL": "garbage"})
    assert_one_line_failure(result, 2, "DATABASE_URL is not a database URL", "postgresql://")
    assert list(tmp_path.iterdir()) == []  # no ./data/tokens.db made in its place


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+asyncpg"])
@pytest.mark.parametrize("command", [["migrate"], ["tokens", "list"], ["serve", "--port", "0"]])
def test_a_closed_port_is_one_line_naming_host_and_port(tmp_path: Path, scheme: str, command: list[str]) -> None:
    # postgres:// and postgresql:// reach asyncpg (normalised) and fail only where the server is missing.
    port = closed_port()
    environ = {**SECRET, "DATABASE_URL": f"{scheme}://postgres:pw-not-shown@127.0.0.1:{port}/salesbot"}
    line = assert_one_line_failure(salesbot(*command, cwd=tmp_path, environ=environ), 1, f"127.0.0.1:{port}")
    assert "connection refused" in line and "pw-not-shown" not in line


def test_a_data_path_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    environ = {**SECRET, "TOKEN_DB_PATH": str(tmp_path / "afile" / "tokens.db")}
    assert_one_line_failure(salesbot("migrate", cwd=tmp_path, environ=environ), 1, "afile/tokens.db", "TOKEN_DB_PATH")


def test_an_unwritable_data_path_is_one_line(tmp_path: Path) -> None:
    # /proc refuses new directories even to root, which the suite may run as.
    environ = {**SECRET, "TOKEN_DB_PATH": "/proc/salesbot/data/tokens.db"}
    assert_one_line_failure(salesbot("migrate", cwd=tmp_path, environ=environ), 1, "/proc/salesbot/data/tokens.db")


@pytest.mark.parametrize("command", [["migrate", "zzz"], ["downgrade", "zzz"]])
def test_an_unknown_revision_is_refused(tmp_path: Path, command: list[str]) -> None:
    assert salesbot("migrate", cwd=tmp_path, environ=SECRET).returncode == 0
    line = assert_one_line_failure(salesbot(*command, cwd=tmp_path, environ=SECRET), 2, "'zzz'")
    head = migrate.head_revision()
    assert head in line  # it lists the revisions there are
    assert f"already at head ({head})" in salesbot("migrate", cwd=tmp_path, environ=SECRET).stdout  # nothing changed


def test_downgrade_one_at_base_is_refused(tmp_path: Path) -> None:
    assert salesbot("migrate", "base", cwd=tmp_path, environ=SECRET).returncode == 0  # a database, no schema yet
    result = salesbot("downgrade", "-1", cwd=tmp_path, environ=SECRET)
    assert_one_line_failure(result, 2, "at base", "-1")


def test_downgrade_without_a_database_says_so_and_creates_none(tmp_path: Path) -> None:
    result = salesbot("downgrade", "-1", cwd=tmp_path, environ=SECRET)
    assert_one_line_failure(result, 1, "data/tokens.db", "salesbot migrate")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_log_level_is_one_line(tmp_path: Path) -> None:
    result = salesbot("serve", "--log-level", "nonsense", cwd=tmp_path, environ=SECRET)
    assert_one_line_failure(result, 2, "--log-level", "'nonsense'", "salesbot serve --help")


@pytest.mark.parametrize("command", [["migrate"], ["tokens", "list"], ["serve"]])
def test_an_env_file_that_does_not_exist_is_no_such_file(tmp_path: Path, command: list[str]) -> None:
    result = salesbot("--env-file", "missing.env", *command, cwd=tmp_path)
    line = assert_one_line_failure(result, 2, "missing.env", "no such file")
    assert "STATE_TOKEN_SECRET" not in line


def test_an_unknown_command_is_one_line(tmp_path: Path) -> None:
    assert_one_line_failure(salesbot("sevre", cwd=tmp_path), 2, "invalid choice: 'sevre'")


@pytest.mark.postgres
def test_a_postgres_database_that_does_not_exist_says_how_to_create_it(tmp_path: Path) -> None:
    assert TEST_DATABASE_URL is not None
    missing = make_url(TEST_DATABASE_URL).set(database="salesbot_no_such_database")
    environ = {**SECRET, "DATABASE_URL": missing.render_as_string(hide_password=False)}
    assert_one_line_failure(
        salesbot("migrate", cwd=tmp_path, environ=environ), 1, "'salesbot_no_such_database' does not exist", "createdb"
    )


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_urls_as_platforms_write_them_work(tmp_path: Path, scratch_postgres: str, scheme: str) -> None:
    url = make_url(scratch_postgres)
    written = f"{scheme}://{url.username}@{url.host}:{url.port}/{url.database}"
    environ = {**SECRET, "DATABASE_URL": written}
    migrated = salesbot("migrate", cwd=tmp_path, environ=environ)
    assert migrated.returncode == 0 and f"head ({migrate.head_revision()})" in migrated.stdout, migrated.stderr
    assert salesbot("tokens", "set", "K", "v", cwd=tmp_path, environ=environ).returncode == 0
    assert salesbot("tokens", "get", "K", cwd=tmp_path, environ=environ).stdout == "v\n"


def test_a_sqlite_url_without_a_driver_works(tmp_path: Path) -> None:
    environ = {**SECRET, "DATABASE_URL": f"sqlite:///{tmp_path / 'plain.db'}"}
    assert salesbot("migrate", cwd=tmp_path, environ=environ).returncode == 0
    assert salesbot("tokens", "set", "K", "v", cwd=tmp_path, environ=environ).returncode == 0
    assert salesbot("tokens", "get", "K", cwd=tmp_path, environ=environ).stdout == "v\n"
    assert (tmp_path / "plain.db").is_file()
