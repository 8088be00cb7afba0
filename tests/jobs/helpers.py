"""Helpers for the job tests: raw table dumps, rows written under a chosen key, the CLI as a subprocess.

Values are compared inside the tests and never printed: assertion messages name keys only.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet

from service.settings import Settings
from service.vault import TokenStore
from tests.conftest import base_environ, make_settings

ROOT = Path(__file__).resolve().parent.parent.parent
ACCOUNT = "6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b"
OTHER_ACCOUNT = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"

RAW_TOKENS = sa.table("tokens", sa.column("key"), sa.column("value"), sa.column("type"), sa.column("refresh_token"))


async def dump(store: TokenStore) -> list[tuple]:
    """Every column of tokens and accounts, ciphertext as stored."""
    async with store.engine.connect() as connection:
        tokens = (await connection.execute(sa.text("SELECT * FROM tokens ORDER BY key"))).all()
        accounts = (await connection.execute(sa.text("SELECT * FROM accounts ORDER BY uuid"))).all()
    return [("tokens", *row) for row in tokens] + [("accounts", *row) for row in accounts]


async def ciphertexts(store: TokenStore) -> dict[str, tuple[str, str | None]]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(sa.select(RAW_TOKENS.c.key, RAW_TOKENS.c.value, RAW_TOKENS.c.refresh_token))
        return {key: (value, refresh) for key, value, refresh in rows}


async def write_raw(store: TokenStore, fernet: Fernet, rows: Iterable[tuple[str, str, str, str | None]]) -> None:
    """Insert (key, plaintext, type, refresh plaintext) rows encrypted with `fernet`, bypassing the ring."""
    payload = [
        {
            "key": key,
            "value": fernet.encrypt(value.encode()).decode(),
            "type": kind,
            "refresh_token": None if refresh is None else fernet.encrypt(refresh.encode()).decode(),
        }
        for key, value, kind, refresh in rows
    ]
    async with store.engine.begin() as connection:  # as another program would: not through the vault
        await connection.execute(sa.insert(RAW_TOKENS), payload)


def token_rows(count: int, prefix: str = "FACEBOOK_ACCESS_TOKEN_") -> list[tuple[str, str, str, str | None]]:
    return [
        (f"{prefix}{n:06d}", f"EAA-test-{n}", "token", f"refresh-{n}" if n % 3 == 0 else None) for n in range(count)
    ]


@contextlib.asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[TokenStore]:
    async with TokenStore.open(settings) as store:
        yield store


def with_keys(settings: Settings, keys: str, **overrides: str) -> Settings:
    return make_settings(settings.database_url, TOKEN_ENCRYPTION_KEYS=keys, **overrides)


async def mismatches(store: TokenStore, expected: dict[str, str]) -> list[str]:
    """Keys whose stored plaintext differs from the expected one (names only, never values)."""
    wrong = []
    for key, value in expected.items():
        if await store.get_token(key) != value:
            wrong.append(key)
    return wrong


def salesbot(*args: str, cwd: Path, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("STATE_TOKEN", "TOKEN_", "DATABASE"))}
    env.update(environ)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "service", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def cli_environ(settings: Settings, **overrides: str) -> dict[str, str]:
    return base_environ(DATABASE_URL=settings.database_url, **overrides)
