"""A STATE_TOKEN_SECRET under 32 characters: `serve` and `migrate` refuse it, saying how to make one,
unless values in the database are encrypted under it (a seed deployment): then they warn and go on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.command import assert_one_line_failure, salesbot
from tests.conftest import PRIMARY_KEY, STATE_SECRET
from tests.seed_loader import SEED_FIXTURE_SECRET, SEED_ROWS, copy_seed_database

WEAK = "only-twenty-chars-ok"  # 20 characters


@pytest.mark.parametrize("command", [["migrate"], ["serve", "--port", "0"]])
def test_a_short_secret_is_refused_with_how_to_make_one(tmp_path: Path, command: list[str]) -> None:
    result = salesbot(*command, cwd=tmp_path, environ={"STATE_TOKEN_SECRET": WEAK})
    line = assert_one_line_failure(result, 2, "STATE_TOKEN_SECRET is 20 characters", "at least 32", "salesbot init")
    assert WEAK not in line
    assert not (tmp_path / "data").exists()  # refused before any database was made


def test_a_short_secret_is_refused_when_no_stored_value_depends_on_it(tmp_path: Path) -> None:
    # Rows under TOKEN_ENCRYPTION_KEYS only: the secret can change freely, so there is no reason to keep it.
    strong = {"STATE_TOKEN_SECRET": STATE_SECRET, "TOKEN_ENCRYPTION_KEYS": PRIMARY_KEY}
    assert salesbot("migrate", cwd=tmp_path, environ=strong).returncode == 0
    assert salesbot("tokens", "set", "FACEBOOK_ACCESS_TOKEN_1", "EAA", cwd=tmp_path, environ=strong).returncode == 0
    weak = {**strong, "STATE_TOKEN_SECRET": WEAK}
    assert_one_line_failure(salesbot("migrate", cwd=tmp_path, environ=weak), 2, "salesbot init")


def test_a_seed_database_under_a_short_secret_warns_and_migrates(tmp_path: Path) -> None:
    copy_seed_database(tmp_path / "data" / "tokens.db")
    environ = {"STATE_TOKEN_SECRET": SEED_FIXTURE_SECRET}  # 22 characters, as the seed deployment had
    result = salesbot("migrate", cwd=tmp_path, environ=environ)
    assert result.returncode == 0, result.stderr
    assert "STATE_TOKEN_SECRET is 22 characters" in result.stderr and "keys rotate" in result.stderr
    assert "Adopted the seed's tokens table" in result.stdout
    for key, (value, _kind) in SEED_ROWS.items():
        assert salesbot("tokens", "get", key, cwd=tmp_path, environ=environ).stdout == f"{value}\n", key
