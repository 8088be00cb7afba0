"""Nothing a client or a provider sends can forge a log line or drive a terminal: control characters are
escaped in the log (the access log's path, whatever a logger is given) and in every human-readable line the
command line prints (tokens list, tokens check, error lines), while the JSON for scripts stays exact."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.printable import printable
from service.settings import Settings
from tests.conftest import PRIMARY_KEY, STATE_SECRET
from tests.web import running_app

ROOT = Path(__file__).resolve().parent.parent
ENVIRON = {"STATE_TOKEN_SECRET": STATE_SECRET, "TOKEN_ENCRYPTION_KEYS": PRIMARY_KEY}
# What a hostile answer might hold: a new line that starts a forged entry, a terminal title, a screen clear,
# a bidirectional override.
HOSTILE = "read_orders\n2026-12-08 09:00:00 INFO salesbot: all good\x1b]0;owned\x07\x1b[2J\u202e"


def salesbot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATE_TOKEN", "TOKEN_", "DATABASE"))}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,
        env={**env, **ENVIRON, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def control_free(text: str) -> bool:
    return all(ch in "\n" or (ch.isprintable() and ch != "\u202e") for ch in text)


def test_printable_escapes_every_control_character_and_nothing_else() -> None:
    assert printable("Acme Café, アクメ靴店 (Page 101)") == "Acme Café, アクメ靴店 (Page 101)"
    assert printable("a\nb\r\x1b[31m\x7f\x9b\u2028\u202e\t") == "a\\x0ab\\x0d\\x1b[31m\\x7f\\x9b\\u2028\\u202e\\x09"


async def test_the_access_log_escapes_the_decoded_path(migrated: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="salesbot")
    async with running_app(migrated.database_url) as web:
        forged = "/x%0a2026-12-08%2009:00:00%20INFO%20salesbot:%20GET%20/%20200%1b[2J"
        assert (await web.browser.get(forged)).status_code == 404
    [line] = [record.getMessage() for record in caplog.records if record.getMessage().startswith("GET /x")]
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("GET /x\\x0a2026-12-08 09:00:00 INFO salesbot: GET / 200\\x1b[2J 404 ")


def test_tokens_list_and_error_lines_escape_what_a_provider_or_an_argument_sent(tmp_path: Path) -> None:
    assert salesbot("migrate", cwd=tmp_path).returncode == 0
    # A scope string as a hostile token answer gave it, stored as it came (before scopes were checked).
    store_rows = f"""
import asyncio
from service import Settings, TokenStore
async def main():
    async with TokenStore.open(Settings.load()) as store:
        await store.store_token("SHOPIFY_ACCESS_TOKEN_acme", "shpat_x", provider="shopify", scopes={HOSTILE!r},
                                name="Acme\\x1b[8m")
asyncio.run(main())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATE_TOKEN", "TOKEN_", "DATABASE"))}
    subprocess.run([sys.executable, "-c", store_rows], cwd=tmp_path, env={**env, **ENVIRON}, check=True, timeout=60)

    table = salesbot("tokens", "list", cwd=tmp_path)
    assert table.returncode == 0
    assert control_free(table.stdout) and control_free(table.stderr)
    _header, row = table.stdout.splitlines()  # one row: the new line in the scopes did not start another
    assert row.startswith("SHOPIFY_ACCESS_TOKEN_acme") and "\\x0a2026-12-08 09:00:00 INFO" in row
    assert row.endswith("\\x1b]0;owned\\x07\\x1b[2J\\u202e")
    # The JSON for scripts is JSON: it carries the exact values, escaped by JSON itself.
    listed = json.loads(salesbot("tokens", "list", "--json", cwd=tmp_path).stdout)
    assert listed[0]["scopes"] == [HOSTILE]
    assert listed[0]["name"] == "Acme\x1b[8m"

    check = salesbot("tokens", "check", cwd=tmp_path)
    assert check.returncode == 0 and control_free(check.stdout) and control_free(check.stderr)

    # An error line that quotes an argument (Alembic's text names the revision it could not find).
    refused = salesbot("migrate", "x\x1b[31my\nfine", cwd=tmp_path)
    assert refused.returncode == 2 and control_free(refused.stderr)
    assert len(refused.stderr.splitlines()) == 1 and "x\\x1b[31my\\x0afine" in refused.stderr
