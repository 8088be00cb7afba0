"""`salesbot tokens check [--online]`: every row decrypted; providers asked through a fake transport."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from unittest.mock import ANY

import httpx
import pytest
from cryptography.fernet import Fernet

from service.jobs.check import check_tokens
from service.settings import Settings
from tests.jobs.helpers import cli_environ, dump, opened, salesbot, with_keys, write_raw

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TOKENS = {
    "SHOPIFY_ACCESS_TOKEN_acme": "shpat-live",
    "SHOPIFY_ACCESS_TOKEN_gone": "shpat-dead",
    "FACEBOOK_ACCESS_TOKEN_1": "EAA-live",
    "FACEBOOK_ACCESS_TOKEN_2": "EAA-dead",
    "FACEBOOK_ACCESS_TOKEN_3": "EAA-flaky",
}


def fake_providers(seen: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        if request.url.path.endswith("/shop.json"):
            live = request.headers["X-Shopify-Access-Token"] == "shpat-live"
            return httpx.Response(200 if live else 401, json={"shop": {}} if live else {"errors": "x"})
        token = request.url.params["input_token"]
        if token == "EAA-flaky":
            return httpx.Response(503, json={})
        return httpx.Response(200, json={"data": {"is_valid": token == "EAA-live"}})

    return httpx.MockTransport(handle)


def online_settings(migrated: Settings) -> Settings:
    return with_keys(
        migrated,
        str(migrated.token_encryption_keys[0]),
        FACEBOOK_APP_ID="123",
        FACEBOOK_APP_SECRET="app-secret-for-tests",
        SHOPIFY_ADMIN_BASE_URL="https://{shop}",
    )


async def test_offline_check_reads_every_row(migrated: Settings) -> None:
    async with opened(migrated) as store:
        for key, value in TOKENS.items():
            await store.store_token(key, value)
        await store.store_token("PAGE_UUID_1", "6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b", type="uuid")
        report = await check_tokens(store, batch_size=2)
    assert (report.rows, report.readable, report.unreadable, report.ok) == (6, 6, [], True)
    assert "live" not in report.table()


async def test_unreadable_rows_are_named_and_nothing_changes(migrated: Settings) -> None:
    async with opened(migrated) as store:
        await store.store_token("FACEBOOK_ACCESS_TOKEN_1", "EAA-live")
        await write_raw(store, Fernet(Fernet.generate_key()), [("SHOPIFY_ACCESS_TOKEN_x", "shpat", "token", None)])
        before = await dump(store)
        report = await check_tokens(store)
        assert await dump(store) == before
    assert report.unreadable == ["SHOPIFY_ACCESS_TOKEN_x"] and not report.ok


async def test_online_check_marks_dead_tokens_once(migrated: Settings) -> None:
    settings = online_settings(migrated)
    seen: list[str] = []
    async with opened(settings) as store, httpx.AsyncClient(transport=fake_providers(seen)) as client:
        for key, value in TOKENS.items():
            await store.store_token(key, value)
        before = {key: await store.get_record(key) for key in TOKENS}
        before_seq = await store.event_log.newest_seq()
        report = await check_tokens(store, online=True, settings=settings, client=client, now=NOW, batch_size=2)
        after = {key: await store.get_record(key) for key in TOKENS}
        dead = {key: (after[key].health, after[key].health_reason) for key in report.dead}
        marked = await store.event_log.list(after=before_seq)
        again = await check_tokens(store, online=True, settings=settings, client=client, now=NOW)
        assert await store.event_log.list(after=marked[-1].seq) == []  # found dead again: nothing new happened
        # The second run finds the same and changes nothing but when each was last asked.
        assert {key: await store.get_record(key) for key in TOKENS} == {
            key: dataclasses.replace(record, checked_at=ANY) for key, record in after.items()
        }
    assert (report.live, sorted(report.dead), report.marked) == (
        2,
        ["FACEBOOK_ACCESS_TOKEN_2", "SHOPIFY_ACCESS_TOKEN_gone"],
        2,
    )
    assert [key for key, _ in report.unknown] == ["FACEBOOK_ACCESS_TOKEN_3"] and not report.ok
    # Recorded as every reader of health sees it: Facebook's is_valid false without a subcode, and a
    # Shopify token that cannot be refreshed, refused.
    assert dead == {
        "FACEBOOK_ACCESS_TOKEN_2": ("needs_reconnect", "token_invalid"),
        "SHOPIFY_ACCESS_TOKEN_gone": ("needs_reconnect", "token_refused"),
    }
    assert report.reasons == {"FACEBOOK_ACCESS_TOKEN_2": "token_invalid", "SHOPIFY_ACCESS_TOKEN_gone": "token_refused"}
    # Each is one `marked_dead` event, with the same named reason and health.
    assert sorted((event.kind, event.key, event.health, event.reason) for event in marked) == [
        ("marked_dead", "FACEBOOK_ACCESS_TOKEN_2", "needs_reconnect", "token_invalid"),
        ("marked_dead", "SHOPIFY_ACCESS_TOKEN_gone", "needs_reconnect", "token_refused"),
    ]
    # Values and expiry are never touched; only the health of the dead (and when Facebook was asked).
    changed = [key for key in TOKENS if (after[key].health, after[key].health_reason) != (None, None)]
    assert sorted(changed) == sorted(report.dead)
    assert all((after[key].value, after[key].expires_at) == (before[key].value, None) for key in TOKENS)
    assert after["FACEBOOK_ACCESS_TOKEN_1"].checked_at is not None
    assert after["FACEBOOK_ACCESS_TOKEN_3"].checked_at is None  # Facebook did not answer: not checked
    assert again.marked == 0 and len(again.dead) == 2
    assert set(seen) == {"acme.myshopify.com", "gone.myshopify.com", "graph.facebook.com"}
    assert "unknown" in report.table() and "dead" in report.table()


async def test_an_interrupted_online_check_keeps_its_marks_and_the_rerun_finishes(migrated: Settings) -> None:
    settings = online_settings(migrated)

    def stop(rows: int) -> None:
        raise KeyboardInterrupt

    async with opened(settings) as store, httpx.AsyncClient(transport=fake_providers([])) as client:
        for key, value in TOKENS.items():
            await store.store_token(key, value)
        with pytest.raises(KeyboardInterrupt):
            # Keys in order: FACEBOOK_1, FACEBOOK_2 (dead) form the first batch.
            await check_tokens(
                store, online=True, settings=settings, client=client, now=NOW, batch_size=2, after_batch=stop
            )
        assert (await store.get_record("FACEBOOK_ACCESS_TOKEN_2")).health == "needs_reconnect"
        assert (await store.get_record("SHOPIFY_ACCESS_TOKEN_gone")).health is None
        report = await check_tokens(store, online=True, settings=settings, client=client, now=NOW, batch_size=2)
        assert (await store.get_record("SHOPIFY_ACCESS_TOKEN_gone")).health == "needs_reconnect"
    assert report.marked == 1 and len(report.dead) == 2


async def test_without_facebook_app_credentials_tokens_are_unknown_not_dead(migrated: Settings) -> None:
    async with opened(migrated) as store, httpx.AsyncClient(transport=fake_providers([])) as client:
        await store.store_token("FACEBOOK_ACCESS_TOKEN_2", "EAA-dead")
        report = await check_tokens(store, online=True, settings=migrated, client=client, now=NOW)
        assert (await store.get_record("FACEBOOK_ACCESS_TOKEN_2")).health is None
    assert report.dead == [] and "FACEBOOK_APP_ID" in report.unknown[0][1]


async def test_the_command_line_prints_the_table(migrated: Settings, tmp_path: Path) -> None:
    async with opened(migrated) as store:
        await store.store_token("FACEBOOK_ACCESS_TOKEN_1", "EAA-live")
        await write_raw(store, Fernet(Fernet.generate_key()), [("SHOPIFY_ACCESS_TOKEN_x", "shpat", "token", None)])
    result = salesbot("tokens", "check", cwd=tmp_path, environ=cli_environ(migrated))
    assert result.returncode == 1
    assert "unreadable  SHOPIFY_ACCESS_TOKEN_x" in result.stdout
    assert "readable             1" in result.stdout and "EAA-live" not in result.stdout + result.stderr


async def test_the_command_line_lists_twenty_unreadable_keys_then_counts_the_rest(
    migrated: Settings, tmp_path: Path
) -> None:
    stranger = Fernet(Fernet.generate_key())
    async with opened(migrated) as store:
        await write_raw(store, stranger, [(f"FACEBOOK_ACCESS_TOKEN_{n:03d}", "EAA", "token", None) for n in range(25)])
    result = salesbot("tokens", "check", cwd=tmp_path, environ=cli_environ(migrated))
    listed = [line for line in result.stdout.splitlines() if line.startswith("unreadable  FACEBOOK")]
    assert result.returncode == 1
    assert listed == [f"unreadable  FACEBOOK_ACCESS_TOKEN_{n:03d}" for n in range(20)]
    assert "unreadable  ... and 5 more (25 unreadable in all)" in result.stdout
    assert "unreadable          25" in result.stdout  # the table still counts them all
