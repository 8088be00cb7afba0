"""Files: the service creates its own 0600 / 0700, and warns at start-up about ones others can read."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from service import migrate
from service.crypto import KeyRing
from service.security import insecure_files
from service.settings import Settings, sqlite_url
from service.vault import TokenStore
from tests.demo_server import free_port, wait_healthy
from tests.reliability.crash_harness import ROOT

ONLY_BACKENDS = ["sqlite"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_env(path: Path, db: Path, file_mode: int) -> None:
    path.write_text(
        f"STATE_TOKEN_SECRET=permission-test-secret-0123456789\nTOKEN_ENCRYPTION_KEYS={Fernet.generate_key().decode()}\n"
        f"DATABASE_URL={sqlite_url(db)}\n"
    )
    path.chmod(file_mode)


def serve_output(cwd: Path, env_file: Path) -> str:
    """Start `salesbot serve`, wait for /healthz, stop it; return everything it printed."""
    port = free_port()
    log = cwd / f"serve-{port}.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("STATE_TOKEN", "TOKEN_", "DATABASE_URL"))}
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--env-file", str(env_file), "serve", "--port", str(port)],
            env={**environ, "PYTHONPATH": str(ROOT)},
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process)
        finally:
            process.terminate()
            process.wait(timeout=10)
    return log.read_text()


def migrated_db(env_file: Path) -> Settings:
    settings = Settings.from_environ({}, env_file=env_file)
    migrate.upgrade(settings.database_url, KeyRing.from_settings(settings))
    return settings


def test_service_files_are_created_owner_only_even_with_a_loose_umask(tmp_path: Path) -> None:
    db = tmp_path / "data" / "tokens.db"
    env_file = tmp_path / ".env"
    write_env(env_file, db, 0o600)
    old_umask = os.umask(0o000)  # the worst case: everything SQLite or we create would be 0666 / 0777
    try:
        settings = migrated_db(env_file)

        async def write() -> None:
            async with TokenStore.open(settings) as store:
                await store.store_token("SHOPIFY_ACCESS_TOKEN_perm", "shpat_permission_test")

        asyncio.run(write())
    finally:
        os.umask(old_umask)
    assert mode(db.parent) == 0o700
    assert mode(db) == 0o600
    # SQLite gives its -wal and -shm files the database file's own mode.
    for suffix in ("-wal", "-shm"):
        side = Path(f"{db}{suffix}")
        if side.exists():
            assert mode(side) == 0o600, suffix
    assert insecure_files(settings) == []


def test_init_writes_a_private_env(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--env-file", str(tmp_path / ".env"), "init"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert mode(tmp_path / ".env") == 0o600


def test_serve_warns_about_a_readable_env_and_database_naming_them(tmp_path: Path) -> None:
    db = tmp_path / "data" / "tokens.db"
    env_file = tmp_path / ".env"
    write_env(env_file, db, 0o600)
    migrated_db(env_file)
    quiet = serve_output(tmp_path, env_file)
    assert "readable by other users" not in quiet and "WARNING salesbot.security" not in quiet, quiet
    env_file.chmod(0o644)
    db.chmod(0o640)
    loud = serve_output(tmp_path, env_file)
    assert f"{env_file} is readable by other users (mode 0644); run: chmod 600 {env_file}" in loud, loud
    assert f"{db} is readable by other users (mode 0640)" in loud, loud
    # It warns and still serves (wait_healthy above): refusing to start would turn a warning into an outage.


def test_migrate_warns_too(tmp_path: Path) -> None:
    db = tmp_path / "data" / "tokens.db"
    env_file = tmp_path / ".env"
    write_env(env_file, db, 0o604)
    result = subprocess.run(
        [sys.executable, "-m", "service", "--env-file", str(env_file), "migrate"],
        env={k: v for k, v in os.environ.items() if not k.startswith(("STATE_TOKEN", "TOKEN_", "DATABASE_URL"))}
        | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"{env_file} is readable by other users (mode 0604)" in result.stderr


def test_a_world_writable_data_directory_is_named(tmp_path: Path) -> None:
    db = tmp_path / "data" / "tokens.db"
    env_file = tmp_path / ".env"
    write_env(env_file, db, 0o600)
    settings = migrated_db(env_file)
    db.parent.chmod(0o777)
    try:
        problems = insecure_files(settings)
    finally:
        db.parent.chmod(0o700)
    assert problems == [f"{db.parent} is written by other users (mode 0777); run: chmod 700 {db.parent}"]
