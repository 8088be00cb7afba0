"""The write planner: a batch goes in a few statements and ends as the same writes one at a time do;
the seed's account rule holds whatever the order; imports report and never replace what they must not.

A batch is planned as runs of one statement shape (an executemany each), the per-write path as one
plan per write. These tests hold the two equal, table for table, from the same starting rows, in key
order (import-db), UUID entries first (import-env) and interleaved.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from service.crypto import KeyRing
from service.models import utcnow
from service.settings import Settings
from service.vault import TokenStore, TokenWrite
from service.vault.bulk import IMPORTED, REPLACED, SKIPPED, UNCHANGED
from service.vault.planner import ABSENT, plan_writes
from tests.jobs.helpers import ACCOUNT, OTHER_ACCOUNT, ciphertexts, opened

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
        dataclasses.replace(await store.get_record(listed.key), created_at=None, updated_at=None)
        for listed in await store.list_tokens()
    ]
    async with store.engine.connect() as connection:
        accounts = (await connection.execute(sa.text("SELECT uuid FROM accounts ORDER BY uuid"))).scalars().all()
    return records, list(accounts)


async def _reset(store: TokenStore) -> None:
    await store.delete_tokens([record.key for record in await store.list_tokens()])
    async with store.engine.begin() as connection:
        await connection.execute(sa.text("DELETE FROM accounts"))
    for write in BEFORE:
        await store.store_tokens([write])


@pytest.mark.parametrize("order", ORDERS)
async def test_one_batch_ends_as_the_same_writes_one_at_a_time(migrated: Settings, order: str) -> None:
    writes = ORDERS[order]
    async with opened(migrated) as store:
        await _reset(store)
        for write in writes:
            await store.store_tokens([write])
        expected = await _state(store)

        await _reset(store)
        await store.store_tokens(writes)
        assert await _state(store) == expected

    records = {record.key: record for record in expected[0]}
    assert records["FACEBOOK_ACCESS_TOKEN_p1"].account_uuid == ACCOUNT  # linked by its UUID entry
    assert records["FACEBOOK_ACCESS_TOKEN_p2"].account_uuid == ACCOUNT  # moved with its UUID entry
    assert records["SHOPIFY_ACCESS_TOKEN_s5"].account_uuid == OTHER_ACCOUNT
    assert records["FACEBOOK_USER_ACCESS_TOKEN_u1"].account_uuid == THIRD_ACCOUNT
    assert records["PAGE_UUID_p4"].account_uuid is None  # not a UUID: names no account
    assert THIRD_ACCOUNT in expected[1]


async def test_an_import_reports_each_row_and_links_as_the_flows_do(migrated: Settings) -> None:
    async with opened(migrated) as store:
        await _reset(store)
        outcomes = await store.bulk.import_writes(ORDERS["key order"], overwrite=False, dry_run=False)
        statuses = {outcome.key: outcome.status for outcome in outcomes}
        again = await store.bulk.import_writes(ORDERS["key order"], overwrite=False, dry_run=False)
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
        replaced = await store.bulk.import_writes(ORDERS["key order"], overwrite=True, dry_run=False)
        records = {record.key: record for record in await store.list_tokens()}
    assert {outcome.key for outcome in replaced if outcome.status == REPLACED} == {
        "FACEBOOK_ACCESS_TOKEN_p2",
        "PAGE_UUID_p2",
        "SHOPIFY_ACCESS_TOKEN_s7",
    }
    assert records["FACEBOOK_ACCESS_TOKEN_p2"].account_uuid == ACCOUNT


async def test_a_guarded_write_never_takes_a_row_someone_else_wrote(migrated: Settings) -> None:
    # What an import's guards mean: write only if the row is still absent, or still holds the
    # ciphertext that was read; otherwise leave it and report the key as not written.
    async with opened(migrated) as store:
        await store.store_token("FACEBOOK_ACCESS_TOKEN_taken", "EAA-theirs")
        await store.store_token("FACEBOOK_ACCESS_TOKEN_read", "EAA-read")
        read = (await ciphertexts(store))["FACEBOOK_ACCESS_TOKEN_read"][0]
        await store.store_token("FACEBOOK_ACCESS_TOKEN_moved", "EAA-before")
        stale = (await ciphertexts(store))["FACEBOOK_ACCESS_TOKEN_moved"][0]
        await store.store_token("FACEBOOK_ACCESS_TOKEN_moved", "EAA-after")  # rewritten since it was read
        writes = [
            TokenWrite("FACEBOOK_ACCESS_TOKEN_taken", "EAA-ours"),
            TokenWrite("FACEBOOK_ACCESS_TOKEN_free", "EAA-free"),
            TokenWrite("FACEBOOK_ACCESS_TOKEN_read", "EAA-replaced"),
            TokenWrite("FACEBOOK_ACCESS_TOKEN_moved", "EAA-ours"),
        ]
        guards = {
            "FACEBOOK_ACCESS_TOKEN_taken": ABSENT,
            "FACEBOOK_ACCESS_TOKEN_free": ABSENT,
            "FACEBOOK_ACCESS_TOKEN_read": read,
            "FACEBOOK_ACCESS_TOKEN_moved": stale,
        }
        written = await store.write(
            plan_writes(writes, ring=KeyRing.from_settings(migrated), now=utcnow(), guards=guards)
        )
        assert sorted(key for keys in written for key in keys) == [
            "FACEBOOK_ACCESS_TOKEN_free",
            "FACEBOOK_ACCESS_TOKEN_read",
        ]
        assert await store.get_token("FACEBOOK_ACCESS_TOKEN_taken") == "EAA-theirs"
        assert await store.get_token("FACEBOOK_ACCESS_TOKEN_moved") == "EAA-after"
        assert await store.get_token("FACEBOOK_ACCESS_TOKEN_free") == "EAA-free"
        assert await store.get_token("FACEBOOK_ACCESS_TOKEN_read") == "EAA-replaced"
