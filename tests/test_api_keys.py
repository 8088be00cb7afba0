"""`salesbot api-keys create|list|revoke`: a key printed once, stored as its SHA-256 only, its making and
revoking events; refusals that name what is wrong and change nothing."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from service.settings import Settings
from service.vault import TokenStore
from tests.command import salesbot
from tests.events.test_commands import events_json
from tests.jobs.helpers import cli_environ

KEY = re.compile(r"sbk_([0-9a-f]{8})_[A-Za-z0-9_-]{43}")


def api_keys(migrated: Settings, tmp_path: Path, *args: str):
    return salesbot("api-keys", *args, cwd=tmp_path, environ=cli_environ(migrated))


async def stored_rows(migrated: Settings) -> list[tuple]:
    async with TokenStore.open(migrated) as store:
        return [tuple(row) for row in await store.query("SELECT * FROM api_keys ORDER BY name", {})]


def listed(migrated: Settings, tmp_path: Path) -> list[dict]:
    result = api_keys(migrated, tmp_path, "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_a_key_is_printed_once_stored_as_its_digest_and_its_changes_are_events(
    migrated: Settings, tmp_path: Path
) -> None:
    made = api_keys(migrated, tmp_path, "create", "--name", "node-bot", "--scope", "proxy")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    match = KEY.fullmatch(key)
    assert match is not None, made.stdout
    prefix = match.group(1)
    assert "not shown again" in made.stderr and key not in made.stderr

    rows = await stored_rows(migrated)
    assert len(rows) == 1
    assert key not in json.dumps(rows, default=str)  # never in clear, in any column
    assert hashlib.sha256(key.encode()).hexdigest() in rows[0]
    keys = listed(migrated, tmp_path)
    assert [(k["name"], k["prefix"], k["scope"], k["calls"], k["revoked_at"]) for k in keys] == [
        ("node-bot", prefix, "proxy", 0, None)
    ]
    table = api_keys(migrated, tmp_path, "list")
    assert "node-bot" in table.stdout and prefix in table.stdout and key not in table.stdout

    revoked = api_keys(migrated, tmp_path, "revoke", prefix)
    assert revoked.returncode == 0 and "revoked" in revoked.stderr, revoked.stderr
    again = api_keys(migrated, tmp_path, "revoke", "node-bot")
    assert again.returncode == 0 and "was revoked already" in again.stderr
    assert listed(migrated, tmp_path)[0]["revoked_at"] is not None

    logged = events_json(migrated, tmp_path)
    assert [(e["kind"], e["name"], e["detail"]) for e in logged] == [
        ("api_key_created", "node-bot", {"prefix": prefix, "scope": "proxy"}),
        ("api_key_revoked", "node-bot", {"prefix": prefix, "scope": "proxy"}),
    ]  # the second revoke changed nothing, so it says nothing
    assert {e["by"]["actor"] for e in logged} == {"cli"}
    assert key not in json.dumps(logged)


async def test_refusals_name_the_problem_and_change_nothing(migrated: Settings, tmp_path: Path) -> None:
    assert api_keys(migrated, tmp_path, "create", "--name", "bot", "--scope", "read").returncode == 0
    before = await stored_rows(migrated)
    taken = api_keys(migrated, tmp_path, "create", "--name", "bot", "--scope", "proxy")
    assert taken.returncode == 2 and "named 'bot' exists already" in taken.stderr
    bad_name = api_keys(migrated, tmp_path, "create", "--name", "has space", "--scope", "read")
    assert bad_name.returncode == 2 and "--name takes" in bad_name.stderr
    bad_scope = api_keys(migrated, tmp_path, "create", "--name", "other", "--scope", "write")
    assert bad_scope.returncode == 2 and "invalid choice: 'write'" in bad_scope.stderr
    unknown = api_keys(migrated, tmp_path, "revoke", "nobody")
    assert unknown.returncode == 2 and "No API key has the name or prefix 'nobody'" in unknown.stderr
    for refused in (taken, bad_name, bad_scope, unknown):
        assert refused.stdout == ""  # no key printed
    assert await stored_rows(migrated) == before
    assert [e["kind"] for e in events_json(migrated, tmp_path)] == ["api_key_created"]
