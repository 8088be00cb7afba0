"""`pytest -m postgres` selects the PostgreSQL cases, and `-m "not postgres"` the rest (collection only)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.command import ROOT, clean_environ

# Collection never connects, so any URL will do: the cases exist when TEST_DATABASE_URL is set.
SOME_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:1/not_contacted"


def collected(marker: str, *paths: str) -> list[str]:
    environ = {**clean_environ(), "TEST_DATABASE_URL": SOME_SERVER}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", marker, *paths],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_minus_m_postgres_selects_the_postgres_cases() -> None:
    postgres = collected("postgres", "tests/test_store.py", "tests/test_operator_errors.py")
    others = collected("not postgres", "tests/test_store.py")
    store_cases = [test for test in postgres if "test_store" in test]
    assert store_cases and all(re.search(r"[\[-]postgres[\]-]", test) for test in store_cases)
    assert any("test_a_postgres_database_that_does_not_exist" in test for test in postgres)  # marked by hand
    assert sorted(re.sub(r"\bpostgres\b", "BACKEND", test) for test in store_cases) == sorted(
        re.sub(r"\bsqlite\b", "BACKEND", test) for test in others
    )
