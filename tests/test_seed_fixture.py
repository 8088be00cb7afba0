"""tests/fixtures/seed_tokens.db is what the seed's own code writes: checked against that code when it is here.

The suite adopts and imports the shipped file, so it runs with nothing beside the repository. These
tests re-run the seed chapter's TokenStorage (tests/fixtures/README.md) to prove the file is still
what that code makes; without the chapter they cannot, and are skipped saying so.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from service.crypto import derive_seed_key
from tests.seed_loader import (
    DEFAULT_SEED_DIR,
    SEED_FIXTURE_SECRET,
    SEED_ROWS,
    copy_seed_database,
    load_seed_module,
    seed_chapter_present,
    write_seed_database,
)

needs_chapter = pytest.mark.skipif(
    not seed_chapter_present(),
    reason=f"the seed chapter is not at {DEFAULT_SEED_DIR} (set SALESBOT_SEED_DIR): the shipped fixture "
    "cannot be compared with a fresh run of the seed's code",
)


def schema_and_rows(path: Path) -> tuple[list[tuple], dict[str, tuple[str, str]]]:
    """The tables' SQL, and each row's type and plaintext under the fixture's secret."""
    fernet = Fernet(derive_seed_key(SEED_FIXTURE_SECRET))
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        schema = connection.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        rows = {
            key: (kind, fernet.decrypt(value.encode()).decode())
            for key, value, kind in connection.execute("SELECT key, value, type FROM tokens")
        }
    finally:
        connection.close()
    return schema, rows


def test_the_fixture_holds_the_seed_rows_under_its_secret(tmp_path: Path) -> None:
    # Runs everywhere: the shipped file opens with the documented secret and holds the documented rows.
    _schema, rows = schema_and_rows(copy_seed_database(tmp_path / "fixture.db"))
    assert rows == {key: (kind, value) for key, (value, kind) in SEED_ROWS.items()}


@needs_chapter
def test_the_seed_code_writes_what_the_fixture_holds(tmp_path: Path) -> None:
    fresh = tmp_path / "data" / "tokens.db"
    write_seed_database(fresh, SEED_FIXTURE_SECRET)
    assert schema_and_rows(fresh) == schema_and_rows(copy_seed_database(tmp_path / "fixture.db"))


@needs_chapter
def test_the_seed_code_reads_the_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = copy_seed_database(tmp_path / "data" / "tokens.db")
    monkeypatch.setenv("STATE_TOKEN_SECRET", SEED_FIXTURE_SECRET)
    storage = load_seed_module().TokenStorage(db_path=str(path))
    assert {key: storage.get_token(key) for key in SEED_ROWS} == {key: value for key, (value, _) in SEED_ROWS.items()}
    assert storage.get_all_tokens_by_type("uuid") == {
        key: value for key, (value, kind) in SEED_ROWS.items() if kind == "uuid"
    }
