"""scripts/backfill_example.py does what its docstring promises, and a second run changes nothing."""

from __future__ import annotations

import importlib.util

from sqlalchemy import text

from service.settings import Settings
from tests.jobs.helpers import ACCOUNT, ROOT, dump, opened


def load_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("backfill_example", ROOT / "scripts" / "backfill_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_backfill_sets_provider_subject_and_account_then_is_idempotent(migrated: Settings) -> None:
    backfill = load_script().backfill
    async with opened(migrated) as store:
        await store.store_token("USER_UUID_acme", ACCOUNT, type="uuid")
        await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat-by-hand")
        async with store.engine.begin() as connection:  # as if typed at a sqlite3 prompt
            await connection.execute(text("UPDATE tokens SET provider = NULL, subject = NULL, account_uuid = NULL"))
        assert await backfill(store, dry_run=True) == 2
        assert (await store.get_record("SHOPIFY_ACCESS_TOKEN_acme")).provider is None
        assert await backfill(store) == 2
        record = await store.get_record("SHOPIFY_ACCESS_TOKEN_acme")
        assert (record.provider, record.subject, record.account_uuid) == ("shopify", "acme", ACCOUNT)
        before = await dump(store)
        assert await backfill(store) == 0
        assert await dump(store) == before
