from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from service.errors import InvalidInput, UndecryptableValue
from service.settings import Settings
from service.vault import TokenStore, TokenWrite

ROOT = Path(__file__).resolve().parent.parent


async def raw_rows(store: TokenStore) -> list[tuple[str, str, str]]:
    async with store.engine.connect() as connection:
        return [
            tuple(row) for row in (await connection.execute(text("SELECT key, value, type FROM tokens ORDER BY key")))
        ]


async def test_seed_api_round_trip(store: TokenStore) -> None:
    await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat_abc", type="token")
    await store.store_token("USER_UUID_acme", "0d5f3c8e-7f6a-4b8e-9a51-3b9f1c2d4e5f", type="uuid")
    assert await store.get_token("SHOPIFY_ACCESS_TOKEN_acme") == "shpat_abc"
    assert await store.get_all_tokens_by_type("token") == {"SHOPIFY_ACCESS_TOKEN_acme": "shpat_abc"}
    assert await store.get_all_tokens_by_type("uuid") == {"USER_UUID_acme": "0d5f3c8e-7f6a-4b8e-9a51-3b9f1c2d4e5f"}
    await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat_def")
    assert await store.get_token("SHOPIFY_ACCESS_TOKEN_acme") == "shpat_def"
    assert await store.delete_token("SHOPIFY_ACCESS_TOKEN_acme") is True
    assert await store.get_token("SHOPIFY_ACCESS_TOKEN_acme") is None
    assert await store.delete_token("SHOPIFY_ACCESS_TOKEN_acme") is False


async def test_unknown_key_is_none(store: TokenStore) -> None:
    assert await store.get_token("FACEBOOK_ACCESS_TOKEN_404") is None
    assert await store.get_record("FACEBOOK_ACCESS_TOKEN_404") is None


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [("", "v", "token"), ("KEY", "", "token"), ("KEY WITH SPACE", "v", "token"), ("KEY", "v", "password")],
)
async def test_bad_input_is_refused_and_changes_nothing(store: TokenStore, key: str, value: str, kind: str) -> None:
    await store.store_token("EXISTING", "kept")
    before = await raw_rows(store)
    with pytest.raises(InvalidInput):
        await store.store_token(key, value, type=kind)
    assert await raw_rows(store) == before


async def test_stored_value_is_never_plaintext(store: TokenStore) -> None:
    await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat_plaintext_marker", refresh_token="shprt_marker")
    async with store.engine.connect() as connection:
        row = (await connection.execute(text("SELECT value, refresh_token FROM tokens"))).one()
    assert "plaintext_marker" not in row[0] and row[0].startswith("gAAAAA")
    assert "shprt_marker" not in row[1]


async def test_corrupt_row_fails_alone(store: TokenStore) -> None:
    await store.store_token("GOOD", "good-value")
    await store.store_token("BAD", "bad-value")
    async with store.engine.begin() as connection:  # outside the vault: SQLite sees it at once,
        await connection.execute(text("UPDATE tokens SET value = 'gAAAAABnot-a-real-token' WHERE key = 'BAD'"))
    deadline = time.monotonic() + 2  # PostgreSQL once its NOTIFY arrives (milliseconds)
    while True:
        try:
            await store.get_token("BAD")
        except UndecryptableValue as error:
            assert "'BAD'" in error.message
            break
        assert time.monotonic() < deadline, "the corrupted row was never read again"
        await asyncio.sleep(0.01)
    assert await store.get_token("GOOD") == "good-value"


async def test_wrong_key_ring_reads_nothing_and_rewrites_nothing(migrated: Settings, settings_factory) -> None:
    async with TokenStore.open(migrated) as store:
        await store.store_token("FACEBOOK_ACCESS_TOKEN_1", "EAAPage")
        before = await raw_rows(store)
    wrong = settings_factory(migrated.database_url, STATE_TOKEN_SECRET="another-secret", TOKEN_ENCRYPTION_KEYS="")
    async with TokenStore.open(wrong) as store:
        with pytest.raises(UndecryptableValue) as caught:
            await store.get_token("FACEBOOK_ACCESS_TOKEN_1")
        assert "TOKEN_ENCRYPTION_KEYS" in caught.value.message
        assert "EAAPage" not in caught.value.message
        assert await raw_rows(store) == before


async def test_two_hundred_concurrent_writers(store: TokenStore) -> None:
    await asyncio.gather(*(store.store_token(f"FACEBOOK_ACCESS_TOKEN_{n}", f"EAA{n}") for n in range(200)))
    assert await store.get_all_tokens_by_type("token") == {f"FACEBOOK_ACCESS_TOKEN_{n}": f"EAA{n}" for n in range(200)}


WRITER = """
import asyncio, sys
sys.path.insert(0, {root!r})
from service.settings import Settings
from service.vault import TokenStore

async def main():
    settings = Settings.from_environ({environ!r}, env_file=None)
    async with TokenStore.open(settings) as store:
        await asyncio.gather(*(store.store_token(f"K_{{sys.argv[1]}}_{{n}}", str(n)) for n in range(150)))

asyncio.run(main())
"""


async def test_two_processes_write_at_once(migrated: Settings) -> None:
    environ = {
        "STATE_TOKEN_SECRET": str(migrated.state_token_secret),
        "TOKEN_ENCRYPTION_KEYS": ",".join(str(k) for k in migrated.token_encryption_keys),
        "DATABASE_URL": migrated.database_url,
    }
    script = WRITER.format(root=str(ROOT), environ=environ)
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", script, name, stderr=subprocess.PIPE)
        for name in ("a", "b")
    ]
    errors = [(await proc.communicate())[1].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errors
    assert not any("locked" in error for error in errors)
    async with TokenStore.open(migrated) as store:
        stored = await store.get_all_tokens_by_type("token")
    assert len(stored) == 300
    assert stored["K_a_149"] == "149" and stored["K_b_0"] == "0"


async def test_uuid_entries_link_rows_to_accounts(store: TokenStore) -> None:
    account = str(uuid.uuid4())
    # Token first, then its UUID entry, as the seed's Shopify flow wrote them; and the other order for Pages.
    await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat_1")
    await store.store_token("USER_UUID_acme", account, type="uuid")
    await store.store_token("PAGE_UUID_77", account, type="uuid")
    await store.store_token("FACEBOOK_ACCESS_TOKEN_77", "EAA77")
    await store.store_token("FACEBOOK_ACCESS_TOKEN_88", "EAA88")  # no UUID entry: not linked
    owned = await store.account_tokens(account)
    assert [(r.key, r.value) for r in owned] == [
        ("FACEBOOK_ACCESS_TOKEN_77", "EAA77"),
        ("PAGE_UUID_77", account),
        ("SHOPIFY_ACCESS_TOKEN_acme", "shpat_1"),
        ("USER_UUID_acme", account),
    ]
    assert {r.provider for r in owned} == {"shopify", "facebook"}
    assert await store.account_of("FACEBOOK_ACCESS_TOKEN_88") is None
    assert await store.link_to_account("FACEBOOK_ACCESS_TOKEN_88", account) is True
    assert await store.account_of("FACEBOOK_ACCESS_TOKEN_88") == account


async def test_metadata_written_in_one_transaction(store: TokenStore) -> None:
    expires = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    account = await store.create_account()
    await store.store_tokens(
        [
            TokenWrite(
                "SHOPIFY_ACCESS_TOKEN_acme",
                "shpat_x",
                "token",
                {
                    "scopes": "read_products",
                    "expires_at": expires,
                    "refresh_token": "shprt_x",
                    "refresh_expires_at": expires + timedelta(days=90),
                    "account_uuid": account,
                },
            ),
            TokenWrite("USER_UUID_acme", account, "uuid"),
        ]
    )
    record = await store.get_record("SHOPIFY_ACCESS_TOKEN_acme")
    assert record is not None
    assert (record.value, record.refresh_token, record.expires_at, record.scopes) == (
        "shpat_x",
        "shprt_x",
        expires,
        "read_products",
    )
    assert "shpat_x" not in repr(record) and "shprt_x" not in repr(record)
    # A batch with one bad write stores none of it.
    with pytest.raises(InvalidInput):
        await store.store_tokens([TokenWrite("NEW_KEY", "v"), TokenWrite("", "v")])
    assert await store.get_token("NEW_KEY") is None


async def test_account_listing_uses_the_index(store: TokenStore, backend: str) -> None:
    query = "SELECT key FROM tokens WHERE account_uuid = 'x'"
    async with store.engine.connect() as connection:
        if backend == "sqlite":
            rows = await connection.execute(text("EXPLAIN QUERY PLAN " + query))
        else:
            # An empty table makes any plan a sequential scan; forbid that to see whether an index exists.
            await connection.execute(text("SET enable_seqscan = off"))
            rows = await connection.execute(text("EXPLAIN " + query))
        plan = " ".join(str(row[-1]) for row in rows)
    assert "ix_tokens_account_uuid" in plan
