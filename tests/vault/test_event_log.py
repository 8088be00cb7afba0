"""The event log as the vault writes it: one event per change, in the change's transaction, with who
made it and a fingerprint of the token, never the token; retention; erasure of a subject's history."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import pytest

from service.housekeeping import prune
from service.models import utcnow
from service.settings import Settings
from service.vault import TokenStore, TokenWrite
from service.vault.events import Event
from service.vault.planner import Plan, Step
from tests.events.helpers import WEBHOOK_SECRET, fingerprint, raw_deliveries, raw_events

ACCOUNT = "6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b"
SHOP_TOKEN = "SHOPIFY_ACCESS_TOKEN_acme"


async def test_a_write_and_a_delete_are_events_with_the_tokens_fingerprint_never_the_token(vault: TokenStore) -> None:
    link = TokenWrite("USER_UUID_acme", ACCOUNT, "uuid")
    await vault.store_tokens([link, TokenWrite(SHOP_TOKEN, "shpat_first", "token", {"name": "Acme"})])
    await vault.store_token(SHOP_TOKEN, "shpat_second")
    assert await vault.delete_token(SHOP_TOKEN) is True
    logged = await vault.event_log.list()
    assert [(e.kind, e.key) for e in logged] == [
        ("token_set", "USER_UUID_acme"),
        ("token_set", SHOP_TOKEN),
        ("token_set", SHOP_TOKEN),
        ("token_deleted", SHOP_TOKEN),
    ]
    assert {(e.provider, e.subject, e.account) for e in logged} == {("shopify", "acme.myshopify.com", ACCOUNT)}
    assert [e.fingerprint for e in logged] == [
        None,  # a link holds an account, not a token
        fingerprint("shpat_first"),
        fingerprint("shpat_second"),
        fingerprint("shpat_second"),  # the token that was deleted: "same token" is answerable without it
    ]
    assert logged[1].name == "Acme" and logged[3].name == "Acme"  # the name it had, though its row is gone
    assert {(e.actor, e.os_user) for e in logged} == {("bot", None)}  # a store opened by a script is a bot's
    assert all(e.instance and e.instance.endswith(f":{os.getpid()}") for e in logged)
    for row in await raw_events(vault):
        assert not any("shpat_" in str(value) for value in row.values()), row
    assert len({e.seq for e in logged}) == 4 and [e.seq for e in logged] == sorted(e.seq for e in logged)


async def test_deleting_what_is_not_there_records_nothing(vault: TokenStore) -> None:
    assert await vault.delete_token("SHOPIFY_ACCESS_TOKEN_nobody") is False
    assert await vault.event_log.list() == []


async def test_a_change_that_rolls_back_leaves_no_event_and_its_neighbours_keep_theirs(vault: TokenStore) -> None:
    before = await vault.event_log.newest_seq()
    failing = Plan([Step("INSERT INTO no_such_table (x) VALUES (1)", [{}])])
    results = await asyncio.gather(
        vault.store_token(SHOP_TOKEN, "shpat_kept"),
        vault.write(failing, events=[Event("token_set", key="SHOPIFY_ACCESS_TOKEN_never")]),
        return_exceptions=True,
    )
    assert results[0] is None and isinstance(results[1], Exception)
    logged = await vault.event_log.list(after=before)
    assert [(e.kind, e.key, e.fingerprint) for e in logged] == [("token_set", SHOP_TOKEN, fingerprint("shpat_kept"))]
    assert await vault.get_token("SHOPIFY_ACCESS_TOKEN_never") is None


async def test_every_event_gets_one_outbox_row_in_order_per_subject(vault: TokenStore) -> None:
    await vault.store_token("SHOPIFY_ACCESS_TOKEN_a", "one")
    await vault.store_token("FACEBOOK_ACCESS_TOKEN_101", "two")
    await vault.store_token("SHOPIFY_ACCESS_TOKEN_a", "three")
    await vault.store_token("CUSTOM_KEY", "four")
    logged = await vault.event_log.list()
    queued = await raw_deliveries(vault)
    assert [row["event_id"] for row in queued] == [e.id for e in logged]
    assert [row["subject_key"] for row in queued] == [
        "shopify:a.myshopify.com",
        "facebook:101",
        "shopify:a.myshopify.com",
        "key:CUSTOM_KEY",
    ]
    assert {(row["status"], row["attempts"]) for row in queued} == {("pending", 0)}


async def test_housekeeping_prunes_events_past_the_retention_with_their_deliveries(
    settings_factory, database_url: str, migrated: Settings
) -> None:
    receiver = {"EVENTS_WEBHOOK_URL": "http://127.0.0.1:9/hooks", "EVENTS_WEBHOOK_SECRET": WEBHOOK_SECRET}
    settings = settings_factory(database_url, EVENTS_RETENTION_DAYS="30", **receiver)
    now = utcnow()
    async with TokenStore.open(settings) as store:
        for age in (timedelta(days=31), timedelta(days=29)):
            await store.write(store.recorder.record(Plan(), [Event("token_set", key=SHOP_TOKEN)], now=now - age))
        _old, young = await store.event_log.list()
        assert (await prune(store, now=now)).events == 1
        assert [e.id for e in await store.event_log.list()] == [young.id]
        assert [row["event_id"] for row in await raw_deliveries(store)] == [young.id]  # the old one's went with it
        assert (await prune(store, now=now)).events == 0


async def test_retention_must_be_a_number_of_days(settings_factory, database_url: str) -> None:
    from service.errors import SettingsError

    for value in ("0", "-3", "a year"):
        with pytest.raises(SettingsError, match="EVENTS_RETENTION_DAYS"):
            settings_factory(database_url, EVENTS_RETENTION_DAYS=value)


async def test_without_a_webhook_url_housekeeping_empties_the_outbox_and_keeps_the_log(vault: TokenStore) -> None:
    await vault.store_token(SHOP_TOKEN, "one")
    assert len(await raw_deliveries(vault)) == 1
    await prune(vault)
    assert await raw_deliveries(vault) == []
    assert len(await vault.event_log.list()) == 1


async def test_a_job_summary_is_one_event_with_its_counts(vault: TokenStore) -> None:
    await vault.record([Event("keys_rotated", detail={"rows": 3, "rewritten": 2})])
    (summary,) = await vault.event_log.list()
    assert (summary.kind, summary.subject, summary.account, summary.detail) == (
        "keys_rotated",
        None,
        None,
        {"rows": 3, "rewritten": 2},
    )
    assert (await raw_deliveries(vault))[0]["subject_key"] == "-"
