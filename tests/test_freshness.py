"""The token cache is never stale in its own process, and catches up with others within the bound.

Bound: ChangeFeed.stale_after (1 s). Tests that wait for another instance or process poll in a loop
with a deadline of the bound plus a margin for a slow machine; none sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import Text, literal, text, update

from service.cache import MISSING
from service.changes import STALE_AFTER_SECONDS
from service.crypto import KeyRing
from service.db import create_engine
from service.settings import Settings
from service.store import TOKENS, TokenStore, TokenWrite

ROOT = Path(__file__).resolve().parent.parent
MARGIN = 1.0  # seconds on top of the bound, for a loaded CI machine


async def wait_for(condition, *, within: float) -> float:
    """Poll `condition` (async, returns bool) until true; fail if that took longer than `within`."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < within, f"not seen within {within} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


# --- this process ------------------------------------------------------------------------------


async def test_write_then_read_and_delete_then_read(store: TokenStore) -> None:
    key = "FACEBOOK_ACCESS_TOKEN_1"
    assert await store.get_token(key) is None  # an absence is cached too...
    await store.store_token(key, "EAA-1")
    assert store.cache.lookup(key) == "EAA-1"  # ...and a write replaces it at commit
    assert await store.get_token(key) == "EAA-1"
    for n in range(2, 6):
        await store.store_token(key, f"EAA-{n}")
        assert await store.get_token(key) == f"EAA-{n}"
    assert await store.delete_token(key) is True
    assert await store.get_token(key) is None  # revoked: never handed out after the delete returned


async def test_a_read_that_began_before_a_write_does_not_cache_the_old_value(store: TokenStore) -> None:
    key = "FACEBOOK_ACCESS_TOKEN_2"
    await store.store_token(key, "old")
    store.cache.invalidate([key])  # as after a restart: the next read loads from the database
    read_done, release = asyncio.Event(), asyncio.Event()
    load = store.cache._load

    async def slow_load(keys: list[str]):
        found = await load(keys)  # has read "old" from the database
        read_done.set()
        await release.wait()  # ... and is held back until the write has committed
        return found

    store.cache._load = slow_load
    early_read = asyncio.create_task(store.get_token(key))
    await read_done.wait()
    await store.store_token(key, "new")
    joined = asyncio.create_task(store.get_token(key))  # begins after the write: must not join the old load
    release.set()
    assert await early_read == "old"  # began before the write: either value is right, this one came back
    assert await joined == "new"
    assert await store.get_token(key) == "new"  # and the cache holds the new value, not the old one
    assert store.cache.lookup(key) == "new"


async def test_a_delete_racing_a_read_does_not_resurrect_the_token(store: TokenStore) -> None:
    key = "SHOPIFY_ACCESS_TOKEN_acme"
    await store.store_token(key, "shpat_revoked")
    store.cache.invalidate([key])
    read_done, release = asyncio.Event(), asyncio.Event()
    load = store.cache._load

    async def slow_load(keys: list[str]):
        found = await load(keys)
        read_done.set()
        await release.wait()
        return found

    store.cache._load = slow_load
    early_read = asyncio.create_task(store.get_token(key))
    await read_done.wait()
    assert await store.delete_token(key) is True
    release.set()
    await early_read
    store.cache._load = load
    assert await store.get_token(key) is None


async def test_raw_write_through_write_transaction_invalidates(store: TokenStore) -> None:
    # What key rotation does: rewrite ciphertexts directly, not through store_token.
    key = "FACEBOOK_ACCESS_TOKEN_3"
    await store.store_token(key, "before-rotation")
    assert await store.get_token(key) == "before-rotation"
    ciphertext = store.keyring.encrypt("after-rotation")
    async with store.write_transaction() as connection:
        await connection.execute(update(TOKENS).where(TOKENS.c.key == key).values(value=literal(ciphertext, Text)))
    assert await store.get_token(key) == "after-rotation"
    async with store.write_transaction() as connection:
        await connection.execute(text("DELETE FROM tokens WHERE key = :key"), {"key": key})
    assert await store.get_token(key) is None


async def test_a_commit_outside_write_transaction_is_seen_by_the_next_read(store: TokenStore) -> None:
    key = "FACEBOOK_ACCESS_TOKEN_4"
    await store.store_token(key, "v1")
    assert await store.get_token(key) == "v1"
    async with store.engine.begin() as connection:
        await connection.execute(
            update(TOKENS).where(TOKENS.c.key == key).values(value=literal(store.keyring.encrypt("v2"), Text))
        )
    assert await store.get_token(key) == "v2"


async def test_the_change_log_triggers_exist_at_head(store: TokenStore, backend: str) -> None:
    # A revision that rebuilds `tokens` in SQLite batch mode drops its triggers: this catches that.
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'tokens'"
        if backend == "sqlite"
        else "SELECT tgname FROM pg_trigger WHERE tgrelid = 'tokens'::regclass AND NOT tgisinternal"
    )
    async with store.engine.connect() as connection:
        names = {row[0] for row in await connection.execute(text(query))}
    expected = (
        {"tokens_log_insert", "tokens_log_update", "tokens_log_rekey", "tokens_log_delete"}
        if backend == "sqlite"
        else {"tokens_log_changes"}
    )
    assert names == expected


# --- the cache itself --------------------------------------------------------------------------


async def test_the_cache_is_bounded(migrated: Settings) -> None:
    ring = KeyRing.from_settings(migrated)
    engine = create_engine(migrated.database_url, keyring=ring)
    store = TokenStore(engine, ring, cache_size=10)
    try:
        await store.store_tokens([TokenWrite(f"K{n}", f"v{n}") for n in range(50)])
        for n in range(50):
            assert await store.get_token(f"K{n}") == f"v{n}"
        assert len(store.cache) == 10
        assert store.cache.lookup("K49") == "v49"  # the most recent stay
        assert store.cache.lookup("K0") is MISSING  # the least recent went
        assert await store.get_token("K0") == "v0"  # evicted, read again
    finally:
        await store.aclose()
        await engine.dispose()


async def test_concurrent_misses_coalesce_and_batch(store: TokenStore) -> None:
    await store.store_tokens([TokenWrite(f"K{n}", f"v{n}") for n in range(40)])
    await store.get_token("warm-up")  # the first read also syncs the change feed
    store.cache.clear()  # writes fill the cache; start cold, as after a restart
    before = store.cache.queries
    same = await asyncio.gather(*(store.get_token("K0") for _ in range(40)))
    assert same == ["v0"] * 40
    assert store.cache.queries - before == 1
    before = store.cache.queries
    different = await asyncio.gather(*(store.get_token(f"K{n}") for n in range(1, 40)))
    assert different == [f"v{n}" for n in range(1, 40)]
    assert store.cache.queries - before <= 2  # one query for the first miss, one for all queued behind it


# --- group commit ------------------------------------------------------------------------------


async def test_two_hundred_concurrent_writers_are_batched_and_durable(store: TokenStore, migrated: Settings) -> None:
    batches = store._writes.batches
    await asyncio.gather(*(store.store_token(f"FACEBOOK_ACCESS_TOKEN_{n}", f"EAA{n}") for n in range(200)))
    assert store._writes.batches - batches < 50  # grouped: far fewer commits than writes
    async with TokenStore.open(migrated) as reopened:  # a new engine: what was acknowledged is on disk
        assert await reopened.get_all_tokens_by_type("token") == {
            f"FACEBOOK_ACCESS_TOKEN_{n}": f"EAA{n}" for n in range(200)
        }


async def test_one_bad_write_does_not_fail_its_batch(store: TokenStore) -> None:
    naive = datetime(2030, 1, 1)  # passes validation, fails in the database layer (UTC columns only)
    outcomes = await asyncio.gather(
        *(store.store_token(f"FACEBOOK_ACCESS_TOKEN_{n}", f"EAA{n}") for n in range(20)),
        store.store_token("FACEBOOK_ACCESS_TOKEN_bad", "EAAbad", expires_at=naive),
        *(store.store_token(f"FACEBOOK_ACCESS_TOKEN_{n}", f"EAA{n}") for n in range(20, 40)),
        return_exceptions=True,
    )
    assert [type(outcome).__name__ for outcome in outcomes if outcome is not None] == ["StatementError"]
    assert isinstance(outcomes[20], Exception)
    assert store._writes.retried >= 1  # it really was in a batch with others
    stored = await store.get_all_tokens_by_type("token")
    assert stored == {f"FACEBOOK_ACCESS_TOKEN_{n}": f"EAA{n}" for n in range(40)}
    assert await store.get_token("FACEBOOK_ACCESS_TOKEN_bad") is None


# --- other instances and processes -------------------------------------------------------------


async def test_another_instance_is_seen_within_the_bound(store: TokenStore, migrated: Settings) -> None:
    key = "FACEBOOK_ACCESS_TOKEN_5"
    await store.store_token(key, "mine")
    assert await store.get_token(key) == "mine"
    async with TokenStore.open(migrated) as other:
        await other.store_token(key, "theirs")

        async def seen(value: str | None) -> bool:
            return await store.get_token(key) == value

        waited = await wait_for(lambda: seen("theirs"), within=STALE_AFTER_SECONDS + MARGIN)
        assert waited <= STALE_AFTER_SECONDS + MARGIN
        assert await other.delete_token(key) is True
        await wait_for(lambda: seen(None), within=STALE_AFTER_SECONDS + MARGIN)


PROCESS = """
import asyncio, sys
sys.path.insert(0, {root!r})
from service.settings import Settings
from service.store import TokenStore

async def main():
    async with TokenStore.open(Settings.from_environ({environ!r}, env_file=None)) as store:
        if sys.argv[1] == "delete":
            await store.delete_token(sys.argv[2])
        else:
            await store.store_token(sys.argv[2], sys.argv[3])

asyncio.run(main())
"""


async def test_another_process_is_seen_within_the_bound(store: TokenStore, migrated: Settings) -> None:
    environ = {
        "STATE_TOKEN_SECRET": str(migrated.state_token_secret),
        "TOKEN_ENCRYPTION_KEYS": ",".join(str(k) for k in migrated.token_encryption_keys),
        "DATABASE_URL": migrated.database_url,
    }
    script = PROCESS.format(root=str(ROOT), environ=environ)
    key = "SHOPIFY_ACCESS_TOKEN_other"
    await store.store_token(key, "shpat_1")
    assert await store.get_token(key) == "shpat_1"

    async def run(*args: str) -> None:
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, *args, stderr=subprocess.PIPE)
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()

    async def seen(value: str | None) -> bool:
        return await store.get_token(key) == value

    await run("store", key, "shpat_2")
    committed = time.monotonic()
    await wait_for(lambda: seen("shpat_2"), within=STALE_AFTER_SECONDS + MARGIN)
    assert time.monotonic() - committed <= STALE_AFTER_SECONDS + MARGIN
    await run("delete", key)  # an uninstall handled by another worker
    await wait_for(lambda: seen(None), within=STALE_AFTER_SECONDS + MARGIN)


async def test_a_cached_value_is_never_served_past_the_bound(store: TokenStore, migrated: Settings) -> None:
    # The bound holds even when nothing reads for a while: an idle cache re-checks before it answers.
    key = "FACEBOOK_ACCESS_TOKEN_6"
    await store.store_token(key, "v1")
    assert await store.get_token(key) == "v1"
    store.changes.synced_at -= STALE_AFTER_SECONDS  # as if the last poll were a bound ago
    async with TokenStore.open(migrated) as other:
        await other.store_token(key, "v2")
    assert await store.get_token(key) == "v2"  # no waiting: the first read past the bound polls first


async def test_many_writes_and_reads_stay_fresh(store: TokenStore) -> None:
    # The mixed benchmark's check, small: every read returns a value at least as new as the newest
    # write that had returned before the read began.
    keys = [f"FACEBOOK_ACCESS_TOKEN_{n}" for n in range(5)]
    acked = dict.fromkeys(keys, 0)
    await store.store_tokens([TokenWrite(key, f"{key}|0") for key in keys])
    stale = 0

    async def writer(key: str) -> None:
        for version in range(1, 60):
            await store.store_token(key, f"{key}|{version}")
            acked[key] = version

    async def reader(key: str) -> None:
        nonlocal stale
        for _ in range(600):
            required = acked[key]
            value = await store.get_token(key)
            assert value is not None
            if int(value.rsplit("|", 1)[1]) < required:
                stale += 1
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(key) for key in keys), *(reader(key) for key in keys for _ in range(4)))
    assert stale == 0


ONLY_SQLITE_NOTE = "the same-machine signal is SQLite's; PostgreSQL instances keep the 1 s bound (tested above)"


async def test_a_revocation_by_another_process_is_never_served_after_it_returned(
    store: TokenStore, migrated: Settings, backend: str
) -> None:
    if backend != "sqlite":
        # PostgreSQL: no shared file, so the bound above is the promise; assert it has no signal.
        assert store.changes.signal is None, ONLY_SQLITE_NOTE
        return
    environ = {
        "STATE_TOKEN_SECRET": str(migrated.state_token_secret),
        "TOKEN_ENCRYPTION_KEYS": ",".join(str(k) for k in migrated.token_encryption_keys),
        "DATABASE_URL": migrated.database_url,
    }
    key = "SHOPIFY_ACCESS_TOKEN_revoked"
    await store.store_token(key, "shpat_live")
    assert await store.get_token(key) == "shpat_live"
    # Take the time bound out of play: only the signal can tell this process about the delete.
    store.changes.stale_after = store.changes.refresh_after = 3600.0
    await store.changes.sync()
    assert await store.get_token(key) == "shpat_live"  # a cache hit now
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROCESS.format(root=str(ROOT), environ=environ), "delete", key, stderr=subprocess.PIPE
    )
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    # The uninstall's request has returned: the very next read must not hand the token out.
    assert await store.get_token(key) is None
