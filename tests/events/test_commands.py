"""`salesbot events` as an operator runs it: the operator's own events (who ran them, as which OS user),
filters, --follow, failed deliveries and redelivery, one-line refusals, and the webhook settings."""

from __future__ import annotations

import asyncio
import getpass
import json
import queue
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from service.events.webhook import Deliverer
from service.models import utcnow
from service.settings import Settings
from service.vault import TokenStore
from tests.command import assert_one_line_failure
from tests.conftest import PRIMARY_KEY, make_settings
from tests.events.helpers import WEBHOOK_SECRET, fingerprint, receiver
from tests.jobs.helpers import ROOT, cli_environ, salesbot

NEW_KEY = Fernet.generate_key().decode()
HOOK = {"EVENTS_WEBHOOK_URL": "http://127.0.0.1:9/hooks", "EVENTS_WEBHOOK_SECRET": WEBHOOK_SECRET}


def events_json(migrated: Settings, tmp_path: Path, *args: str, **environ: str) -> list[dict]:
    result = salesbot("events", "--json", *args, cwd=tmp_path, environ=cli_environ(migrated, **environ))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_operators_commands_are_events_by_the_cli_and_its_os_user(migrated: Settings, tmp_path: Path) -> None:
    environ = cli_environ(migrated)
    assert (
        salesbot("tokens", "set", "SHOPIFY_ACCESS_TOKEN_acme", "shpat_one", cwd=tmp_path, environ=environ).returncode
        == 0
    )
    assert salesbot("tokens", "delete", "SHOPIFY_ACCESS_TOKEN_acme", cwd=tmp_path, environ=environ).returncode == 0
    imported = salesbot("import-env", cwd=tmp_path, environ={**environ, "FACEBOOK_ACCESS_TOKEN_101": "EAA-imported"})
    assert imported.returncode == 0, imported.stderr
    rotated = salesbot(
        "keys", "rotate", cwd=tmp_path, environ=cli_environ(migrated, TOKEN_ENCRYPTION_KEYS=f"{NEW_KEY},{PRIMARY_KEY}")
    )
    assert rotated.returncode == 0, rotated.stderr
    logged = events_json(migrated, tmp_path)
    assert [(e["kind"], e["key"]) for e in logged] == [
        ("token_set", "SHOPIFY_ACCESS_TOKEN_acme"),
        ("token_deleted", "SHOPIFY_ACCESS_TOKEN_acme"),
        ("imported", None),
        ("keys_rotated", None),
    ]
    assert {(e["by"]["actor"], e["by"]["os_user"]) for e in logged} == {("cli", getpass.getuser())}
    assert logged[0]["fingerprint"] == logged[1]["fingerprint"] == fingerprint("shpat_one")
    assert logged[2]["detail"] == {"source": "env", "imported": 1, "replaced": 0, "unchanged": 0, "skipped": 0}
    assert logged[3]["detail"] == {"rows": 1, "rewritten": 1, "unreadable": 0}
    assert "shpat_one" not in json.dumps(logged)
    # A second rotation rewrites nothing, so it says nothing.
    environ_new = cli_environ(migrated, TOKEN_ENCRYPTION_KEYS=f"{NEW_KEY},{PRIMARY_KEY}")
    assert salesbot("keys", "rotate", cwd=tmp_path, environ=environ_new).returncode == 0
    assert len(events_json(migrated, tmp_path)) == 4


def test_filters_by_connection_kind_and_time(migrated: Settings, tmp_path: Path) -> None:
    async def write() -> None:
        async with TokenStore.open(migrated) as store:
            await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "a")
            await store.store_token("FACEBOOK_ACCESS_TOKEN_101", "b")
            await store.delete_token("FACEBOOK_ACCESS_TOKEN_101")
            await store.store_token("USER_UUID_acme", "6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b", type="uuid")

    asyncio.run(write())
    assert [e["key"] for e in events_json(migrated, tmp_path, "--shop", "acme")] == [
        "SHOPIFY_ACCESS_TOKEN_acme",
        "USER_UUID_acme",
    ]
    assert [e["kind"] for e in events_json(migrated, tmp_path, "--page", "101")] == ["token_set", "token_deleted"]
    assert [e["subject"] for e in events_json(migrated, tmp_path, "--kind", "token_deleted")] == ["101"]
    account = events_json(migrated, tmp_path, "--account", "6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b")
    assert [e["key"] for e in account] == ["USER_UUID_acme"]
    assert len(events_json(migrated, tmp_path, "--since", "1h")) == 4
    assert events_json(migrated, tmp_path, "--since", (utcnow() + timedelta(minutes=5)).isoformat()) == []
    assert [e["key"] for e in events_json(migrated, tmp_path, "--limit", "1")] == ["USER_UUID_acme"]  # the newest
    text = salesbot("events", "--page", "101", cwd=tmp_path, environ=cli_environ(migrated))
    lines = text.stdout.splitlines()
    assert len(lines) == 2 and "token_deleted" in lines[1] and "facebook:101" in lines[1] and "by bot" in lines[1]
    assert text.stderr == "2 event(s).\n"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--since", "yesterday"), "--since 'yesterday'"),
        (("--kind", "exploded"), "--kind 'exploded' is not an event kind"),
        (("--account", "not-a-uuid"), "--account takes an account UUID"),
        (("--page", "10a"), "--page takes a Page id"),
        (("--shop", "no shop!"), "--shop: 'no shop!' is not a valid Shopify shop name"),
        (("redeliver", "--all-failed"), "EVENTS_WEBHOOK_URL is not set"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    migrated: Settings, tmp_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    result = salesbot("events", *args, cwd=tmp_path, environ=cli_environ(migrated))
    assert_one_line_failure(result, 2, fragment)


def test_redeliver_needs_ids_or_all_failed_and_names_unknown_ids(migrated: Settings, tmp_path: Path) -> None:
    environ = cli_environ(migrated, **HOOK)
    assert_one_line_failure(salesbot("events", "redeliver", cwd=tmp_path, environ=environ), 2, "event ids")
    assert_one_line_failure(salesbot("events", "redeliver", "x1", cwd=tmp_path, environ=environ), 2, "not an event id")
    unknown = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    result = salesbot("events", "redeliver", unknown, cwd=tmp_path, environ=environ)
    assert result.returncode == 1 and result.stdout == f"not found or already queued  {unknown}\n"


def test_failed_deliveries_are_listed_and_sent_again(migrated: Settings, tmp_path: Path) -> None:
    settings = make_settings(migrated.database_url, **HOOK)

    async def fail_for_a_day(url: str) -> str:
        async with TokenStore.open(settings) as store, httpx.AsyncClient(timeout=5.0) as client:
            await store.store_token("FACEBOOK_ACCESS_TOKEN_101", "EAA-x")
            (event,) = await store.event_log.list()
            later = event.at + timedelta(hours=24, seconds=1)
            await Deliverer(store, url, WEBHOOK_SECRET, client, clock=lambda: later).deliver_due()
            return event.id

    with receiver(status=500) as endpoint:
        event_id = asyncio.run(fail_for_a_day(endpoint.url))
    environ = cli_environ(migrated, **HOOK)
    failed = salesbot("events", "--failed", cwd=tmp_path, environ=environ)
    assert failed.returncode == 0 and failed.stderr == "1 failed delivery.\n"
    assert failed.stdout.startswith(f"{event_id}  token_set") and "attempts=1" in failed.stdout
    assert "error=http_500" in failed.stdout
    again = salesbot("events", "redeliver", event_id, cwd=tmp_path, environ=environ)
    assert again.returncode == 0 and again.stdout == f"queued  {event_id}\n"
    assert salesbot("events", "--failed", cwd=tmp_path, environ=environ).stdout == ""


def test_follow_prints_each_new_event_as_it_is_committed(migrated: Settings, tmp_path: Path) -> None:
    environ = {**cli_environ(migrated), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "service", "events", "--follow", "--json", "--page", "202"]
    with subprocess.Popen(
        command, cwd=tmp_path, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)  # type: ignore[union-attr]
        reader.start()
        try:
            assert process.stderr.readline() == "0 event(s); following.\n"

            async def write() -> None:
                async with TokenStore.open(migrated) as store:
                    await store.store_token("FACEBOOK_ACCESS_TOKEN_101", "other page")
                    await store.store_token("FACEBOOK_ACCESS_TOKEN_202", "EAA-followed")

            asyncio.run(write())
            followed = json.loads(lines.get(timeout=30))
            assert (followed["kind"], followed["subject"], followed["fingerprint"]) == (
                "token_set",
                "202",
                fingerprint("EAA-followed"),
            )
        finally:
            process.terminate()
            process.wait(timeout=10)
            reader.join(timeout=10)
    assert lines.empty()  # Page 101's event was not printed


def test_names_are_printed_with_control_characters_escaped(migrated: Settings, tmp_path: Path) -> None:
    async def write() -> None:
        async with TokenStore.open(migrated) as store:
            await store.store_token("FACEBOOK_ACCESS_TOKEN_101", "EAA", name="Evil\x1b[2J\nPage")

    asyncio.run(write())
    shown = salesbot("events", cwd=tmp_path, environ=cli_environ(migrated)).stdout
    assert "\x1b" not in shown and shown.count("\n") == 1 and '"Evil\\u001b[2J\\nPage"' in shown


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        (
            {"EVENTS_WEBHOOK_URL": "ftp://hooks.example/x", "EVENTS_WEBHOOK_SECRET": WEBHOOK_SECRET},
            "http:// or https://",
        ),
        ({"EVENTS_WEBHOOK_URL": "http://127.0.0.1:8000/h", "EVENTS_WEBHOOK_SECRET": "short"}, "at least 32"),
        ({"EVENTS_WEBHOOK_URL": "http://127.0.0.1:8000/h"}, "EVENTS_WEBHOOK_SECRET"),
        (
            {
                **HOOK,
                "EVENTS_WEBHOOK_URL": "https://bot.example.com/events",
                "SHOPIFY_REDIRECT_URI": "https://bot.example.com/shopify/callback",
            },
            "points at this service itself",
        ),
    ],
)
def test_webhook_settings_that_cannot_work_are_refused_in_one_line(
    migrated: Settings, tmp_path: Path, given: dict[str, str], fragment: str
) -> None:
    result = salesbot("events", cwd=tmp_path, environ=cli_environ(migrated, **given))
    assert_one_line_failure(result, 2, fragment)


def test_serve_refuses_a_webhook_url_that_is_itself_and_allows_a_neighbour(migrated: Settings, tmp_path: Path) -> None:
    environ = cli_environ(migrated, **{**HOOK, "EVENTS_WEBHOOK_URL": "http://localhost:5999/hooks"})
    result = salesbot("serve", "--port", "5999", cwd=tmp_path, environ=environ)
    assert_one_line_failure(result, 2, "EVENTS_WEBHOOK_URL points at this service itself (127.0.0.1:5999)")
    from service.events.webhook import points_at_service

    assert points_at_service("http://127.0.0.1:5999/x", "0.0.0.0", 5999)
    assert not points_at_service("http://127.0.0.1:6000/x", "127.0.0.1", 5999)  # the team's receiver beside it
    assert not points_at_service("http://10.0.0.7:5999/x", "127.0.0.1", 5999)  # another host's port
