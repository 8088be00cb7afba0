"""service/jobs/writing.py: a batch goes in a few statements, and comes out as `store.upsert` row by row.

The imports write a batch as runs of one statement shape (plain tokens through service/bulk_upsert.py,
UUID entries with their own account and the link to the token beside them). These tests hold that
equal, table for table, to what the store's own per-row upsert (the OAuth flows' path) makes of the
same writes from the same starting rows, in key order (import-db) and UUID entries first (import-env).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from service.bulk_upsert import upsert_all
from service.jobs.writing import IMPORTED, REPLACED, SKIPPED, UNCHANGED, _claim, write_batch
from service.settings import Settings
from service.store import TokenStore, TokenWrite
from tests.jobs.helpers import ACCOUNT, OTHER_ACCOUNT, opened

THIRD_ACCOUNT = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
EXPIRES = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)

# Rows already in the store before the writes.
BEFORE = [
    TokenWrite("PAGE_UUID_p2", OTHER_ACCOUNT, "uuid"),
    TokenWrite("FACEBOOK_ACCESS_TOKEN_p2", "EAA-p2-old"),
    TokenWrite("USER_UUID_s3", ACCOUNT, "uuid"),
    TokenWrite("USER_UUID_s7", THIRD_ACCOUNT, "uuid"),
    TokenWrite("SHOPIFY_ACCESS_TOKEN_s7", "shpat-s7-old", "token", {"account_uuid": OTHER_ACCOUNT}),
]
WRITES = [
    TokenWrite("CUSTOM_KEY", "custom-value"),
    TokenWrite("FACEBOOK_ACCESS_TOKEN_p1", "EAA-p1"),
    TokenWrite("FACEBOOK_ACCESS_TOKEN_p2", "EAA-p2-new"),
    TokenWrite("FACEBOOK_ACCESS_TOKEN_p4", "EAA-p4"),
    TokenWrite("FACEBOOK_USER_ACCESS_TOKEN", "EAA-bare-user", "token", {"provider": "facebook"}),
    TokenWrite("FACEBOOK_USER_ACCESS_TOKEN_u1", "EAA-u1", "token", {"account_uuid": THIRD_ACCOUNT}),
    TokenWrite("PAGE_UUID_p1", ACCOUNT, "uuid"),
    TokenWrite("PAGE_UUID_p2", ACCOUNT, "uuid"),
    TokenWrite("PAGE_UUID_p4", "not-a-uuid", "uuid"),
    TokenWrite("SHOPIFY_ACCESS_TOKEN_s3", "shpat-s3", "token", {"scopes": "read_products", "expires_at": EXPIRES}),
    TokenWrite("SHOPIFY_ACCESS_TOKEN_s5", "shpat-s5", "token", {"refresh_token": "refresh-s5"}),
    TokenWrite("SHOPIFY_ACCESS_TOKEN_s7", "shpat-s7-new"),
    TokenWrite("USER_UUID_s5", f"  {OTHER_ACCOUNT.upper()} ", "uuid"),
    TokenWrite("USER_UUID_s6", "ignored-value", "uuid", {"account_uuid": THIRD_ACCOUNT, "provider": "shopify"}),
]
ORDERS = {
    "key order": sorted(WRITES, key=lambda write: write.key),
    "UUID entries first": sorted(WRITES, key=lambda write: (write.type != "uuid", write.key)),
    "interleaved": sorted(WRITES, key=lambda write: (write.key.rsplit("_", 1)[-1], write.key)),
}


async def _state(store: TokenStore) -> tuple[list, list]:
    """Every row, values decrypted, timestamps left out (they say when, not what)."""
    records = [
        dataclasses.replace(record, created_at=None, updated_at=None)
        for record in await store._records(sa.true())  # values decrypted, as stored
    ]
    async with store.engine.connect() as connection:
        accounts = (await connection.execute(sa.text("SELECT uuid FROM accounts ORDER BY uuid"))).scalars().all()
    return records, list(accounts)


async def _reset(store: TokenStore) -> None:
    async with store.write_transaction() as connection:
        await connection.execute(sa.text("DELETE FROM tokens"))
        await connection.execute(sa.text("DELETE FROM accounts"))
    async with store.write_transaction() as connection:
        for write in BEFORE:
            await store.upsert(connection, write)


@pytest.mark.parametrize("order", ORDERS)
async def test_batched_writes_equal_the_stores_upsert_row_by_row(migrated: Settings, order: str) -> None:
    writes = ORDERS[order]
    async with opened(migrated) as store:
        await _reset(store)
        async with store.write_transaction() as connection:
            for write in writes:
                await store.upsert(connection, write)
        expected = await _state(store)

        await _reset(store)
        async with store.write_transaction() as connection:
            await upsert_all(connection, writes)
        assert await _state(store) == expected

    records = {record.key: record for record in expected[0]}
    assert records["FACEBOOK_ACCESS_TOKEN_p1"].account_uuid == ACCOUNT  # linked by its UUID entry
    assert records["FACEBOOK_ACCESS_TOKEN_p2"].account_uuid == ACCOUNT  # moved with its UUID entry
    assert records["SHOPIFY_ACCESS_TOKEN_s5"].account_uuid == OTHER_ACCOUNT
    assert records["FACEBOOK_USER_ACCESS_TOKEN_u1"].account_uuid == THIRD_ACCOUNT
    assert THIRD_ACCOUNT in expected[1]


async def test_a_mixed_batch_reports_and_links_through_write_batch(migrated: Settings) -> None:
    async with opened(migrated) as store:
        await _reset(store)
        outcomes = await write_batch(store, ORDERS["key order"], overwrite=False, dry_run=False)
        statuses = {outcome.key: outcome.status for outcome in outcomes}
        again = await write_batch(store, ORDERS["key order"], overwrite=False, dry_run=False)
        records = {record.key: record for record in await store.list_tokens()}
        assert await store.get_token("FACEBOOK_ACCESS_TOKEN_p2") == "EAA-p2-old"
    assert statuses["FACEBOOK_ACCESS_TOKEN_p2"] == SKIPPED and statuses["PAGE_UUID_p2"] == SKIPPED
    assert statuses["FACEBOOK_ACCESS_TOKEN_p1"] == IMPORTED and statuses["PAGE_UUID_p1"] == IMPORTED
    assert {outcome.status for outcome in again} <= {UNCHANGED, SKIPPED}
    assert [outcome.key for outcome in again if outcome.status == UNCHANGED] == [
        key for key, status in statuses.items() if status == IMPORTED
    ]
    assert records["FACEBOOK_ACCESS_TOKEN_p1"].account_uuid == ACCOUNT
    assert records["FACEBOOK_ACCESS_TOKEN_p2"].account_uuid == OTHER_ACCOUNT  # kept: nothing was replaced
    assert records["SHOPIFY_ACCESS_TOKEN_s3"].account_uuid == ACCOUNT

    async with opened(migrated) as store:
        replaced = await write_batch(store, ORDERS["key order"], overwrite=True, dry_run=False)
        records = {record.key: record for record in await store.list_tokens()}
    assert {outcome.key for outcome in replaced if outcome.status == REPLACED} == {
        "FACEBOOK_ACCESS_TOKEN_p2",
        "PAGE_UUID_p2",
        "SHOPIFY_ACCESS_TOKEN_s7",
    }
    assert records["FACEBOOK_ACCESS_TOKEN_p2"].account_uuid == ACCOUNT


async def test_a_claim_never_takes_a_row_someone_else_wrote(migrated: Settings) -> None:
    async with opened(migrated) as store:
        await store.store_token("FACEBOOK_ACCESS_TOKEN_taken", "EAA-theirs")
        async with store.write_transaction() as connection:
            claimed = await _claim(
                connection,
                [TokenWrite("FACEBOOK_ACCESS_TOKEN_taken", "EAA-ours"), TokenWrite("FACEBOOK_ACCESS_TOKEN_free", "x")],
                store.keyring.encrypt("claimed"),
            )
            await upsert_all(connection, [TokenWrite("FACEBOOK_ACCESS_TOKEN_free", "EAA-free")])
        assert claimed == {"FACEBOOK_ACCESS_TOKEN_free"}
        assert await store.get_token("FACEBOOK_ACCESS_TOKEN_taken") == "EAA-theirs"
        assert await store.get_token("FACEBOOK_ACCESS_TOKEN_free") == "EAA-free"
