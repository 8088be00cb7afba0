"""`salesbot keys rotate`: every row onto the primary key, safely beside a live service."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from service import migrate
from service.crypto import KeyRing, derive_seed_key
from service.jobs.rotate import rotate_keys
from service.settings import Settings, sqlite_url
from tests.conftest import STATE_SECRET, make_settings
from tests.jobs.helpers import (
    ROOT,
    ciphertexts,
    cli_environ,
    dump,
    mismatches,
    opened,
    salesbot,
    token_rows,
    with_keys,
    write_raw,
)

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()


async def _old_rows(migrated: Settings, count: int) -> dict[str, str]:
    rows = token_rows(count)
    async with opened(with_keys(migrated, OLD)) as store:
        await write_raw(store, Fernet(OLD), rows)
    expected = {key: value for key, value, _, _ in rows}
    expected.update({f"{key} refresh": refresh for key, _, _, refresh in rows if refresh is not None})
    return expected


async def _plaintexts_match(settings: Settings, expected: dict[str, str]) -> list[str]:
    async with opened(settings) as store:
        wrong = await mismatches(store, {k: v for k, v in expected.items() if not k.endswith(" refresh")})
        for key, value in expected.items():
            if key.endswith(" refresh"):
                record = await store.get_record(key.removesuffix(" refresh"))
                if record is None or record.refresh_token != value:
                    wrong.append(key)
    return wrong


async def test_rotation_moves_every_row_and_the_old_key_can_go(migrated: Settings) -> None:
    expected = await _old_rows(migrated, 1200)
    async with opened(with_keys(migrated, f"{NEW},{OLD}")) as store:
        report = await rotate_keys(store, batch_size=500)
        stored = await ciphertexts(store)
    assert (report.rows, report.rewritten, report.already_current, report.ok) == (1200, 1200, 0, True)
    new_only = KeyRing([NEW])
    assert all(new_only.is_current(value) for value, _ in stored.values())
    assert all(new_only.is_current(refresh) for _, refresh in stored.values() if refresh is not None)
    # The old key dropped: everything still reads, and reads the same plaintext.
    assert await _plaintexts_match(with_keys(migrated, NEW), expected) == []


async def test_second_run_changes_nothing(migrated: Settings) -> None:
    await _old_rows(migrated, 300)
    async with opened(with_keys(migrated, f"{NEW},{OLD}")) as store:
        first = await rotate_keys(store, batch_size=100)
        before = await dump(store)
        again = await rotate_keys(store, batch_size=100)
        after = await dump(store)
    assert first.rewritten == 300
    assert (again.rewritten, again.already_current) == (0, 300)
    assert "0 rows rewritten" in again.summary()
    assert after == before


async def test_interrupted_rotation_resumes_where_it_stopped(migrated: Settings) -> None:
    expected = await _old_rows(migrated, 1000)

    def stop_after_first_batch(rows_seen: int) -> None:
        raise KeyboardInterrupt

    settings = with_keys(migrated, f"{NEW},{OLD}")
    async with opened(settings) as store:
        with pytest.raises(KeyboardInterrupt):
            await rotate_keys(store, batch_size=400, after_batch=stop_after_first_batch)
        halfway = await ciphertexts(store)
        assert sum(KeyRing([NEW]).is_current(value) for value, _ in halfway.values()) == 400
        report = await rotate_keys(store, batch_size=400)
    assert (report.rewritten, report.already_current, report.ok) == (600, 400, True)
    assert await _plaintexts_match(with_keys(migrated, NEW), expected) == []


async def test_dry_run_counts_and_writes_nothing(migrated: Settings) -> None:
    await _old_rows(migrated, 250)
    async with opened(with_keys(migrated, f"{NEW},{OLD}")) as store:
        before = await dump(store)
        report = await rotate_keys(store, batch_size=100, dry_run=True)
        assert await dump(store) == before
    assert (report.rewritten, report.dry_run) == (250, True)
    assert "250 rows would be rewritten" in report.summary()


async def test_a_token_the_service_writes_mid_rotation_is_never_overwritten(migrated: Settings) -> None:
    await _old_rows(migrated, 50)
    settings = with_keys(migrated, f"{NEW},{OLD}")
    target = "FACEBOOK_ACCESS_TOKEN_000007"
    async with opened(settings) as store, opened(settings) as service:

        async def service_writes(keys: list[str]) -> None:
            # Between the job's read of the batch and its write: the service stores a fresh token.
            if target in keys:
                await service.store_token(target, "EAA-fresh-from-oauth")

        report = await rotate_keys(store, batch_size=20, before_write=service_writes)
        assert await store.get_token(target) == "EAA-fresh-from-oauth"
    assert (report.rewritten, report.changed_meanwhile, report.ok) == (49, 1, True)


async def test_unreadable_rows_are_named_and_left_untouched(migrated: Settings) -> None:
    await _old_rows(migrated, 30)
    stranger = Fernet(Fernet.generate_key())
    async with opened(with_keys(migrated, f"{NEW},{OLD}")) as store:
        await write_raw(store, stranger, [("SHOPIFY_ACCESS_TOKEN_lost", "shpat-x", "token", None)])
        before = await ciphertexts(store)
        report = await rotate_keys(store, batch_size=8)
        after = await ciphertexts(store)
    assert report.unreadable == ["SHOPIFY_ACCESS_TOKEN_lost"] and not report.ok
    assert report.rewritten == 30
    assert after["SHOPIFY_ACCESS_TOKEN_lost"] == before["SHOPIFY_ACCESS_TOKEN_lost"]


async def test_a_seed_database_moves_off_the_state_token_secret(migrated: Settings) -> None:
    seed_fernet = Fernet(derive_seed_key(STATE_SECRET))
    rows = token_rows(40, prefix="SHOPIFY_ACCESS_TOKEN_")
    async with opened(migrated) as store:
        await write_raw(store, seed_fernet, rows)
    async with opened(with_keys(migrated, NEW)) as store:
        report = await rotate_keys(store)
        stored = await ciphertexts(store)
    assert report.rewritten == 40
    ring_without_seed_key = KeyRing([NEW])
    assert all(ring_without_seed_key.decrypt(value) for value, _ in stored.values())


async def test_the_command_line_rotates_then_reports_nothing_to_do(migrated: Settings, tmp_path) -> None:
    await _old_rows(migrated, 120)
    environ = cli_environ(migrated, TOKEN_ENCRYPTION_KEYS=f"{NEW},{OLD}")
    first = salesbot("keys", "rotate", "--batch-size", "50", cwd=tmp_path, environ=environ)
    assert first.returncode == 0, first.stderr
    assert "120 rows rewritten" in first.stderr and "EAA-test" not in first.stdout + first.stderr
    second = salesbot("keys", "rotate", cwd=tmp_path, environ=environ)
    assert second.returncode == 0 and "0 rows rewritten" in second.stderr


async def test_the_command_line_exits_1_on_unreadable_rows(migrated: Settings, tmp_path) -> None:
    async with opened(migrated) as store:
        await write_raw(store, Fernet(Fernet.generate_key()), [("PAGE_UUID_9", "x", "uuid", None)])
    result = salesbot("keys", "rotate", cwd=tmp_path, environ=cli_environ(migrated))
    assert result.returncode == 1
    assert "unreadable     PAGE_UUID_9" in result.stdout


async def test_killed_with_sigkill_mid_run_then_rerun_finishes(tmp_path) -> None:
    settings = make_settings(sqlite_url(tmp_path / "kill.db"), TOKEN_ENCRYPTION_KEYS=OLD)
    await migrate.upgrade_async(settings.database_url, KeyRing.from_settings(settings))
    expected = await _old_rows(settings, 20_000)
    environ = cli_environ(settings, TOKEN_ENCRYPTION_KEYS=f"{NEW},{OLD}", PYTHONPATH=str(ROOT))
    with subprocess.Popen(
        [sys.executable, "-m", "service", "keys", "rotate", "--batch-size", "200"],
        cwd=tmp_path,
        env={**environ, "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    ) as process:
        assert process.stderr is not None
        first_line = process.stderr.readline()  # printed after the first committed batch
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert "keys rotate:" in first_line and process.returncode == -signal.SIGKILL
    async with opened(with_keys(settings, f"{NEW},{OLD}")) as store:
        partial = sum(KeyRing([NEW]).is_current(value) for value, _ in (await ciphertexts(store)).values())
    assert 0 < partial < 20_000
    rerun = salesbot("keys", "rotate", cwd=tmp_path, environ=environ)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{20_000 - partial:,} rows rewritten" in rerun.stderr
    assert await _plaintexts_match(with_keys(settings, NEW), {k: v for k, v in list(expected.items())[:500]}) == []


async def test_the_command_line_lists_twenty_unreadable_keys_then_counts_the_rest(migrated: Settings, tmp_path) -> None:
    stranger = Fernet(Fernet.generate_key())
    async with opened(migrated) as store:
        await write_raw(store, stranger, [(f"PAGE_UUID_{n:03d}", "x", "uuid", None) for n in range(23)])
    result = salesbot("keys", "rotate", cwd=tmp_path, environ=cli_environ(migrated))
    listed = [line for line in result.stdout.splitlines() if line.startswith("unreadable     PAGE_UUID_")]
    assert result.returncode == 1
    assert listed == [f"unreadable     PAGE_UUID_{n:03d}" for n in range(20)]
    assert result.stdout.splitlines()[20] == "unreadable     ... and 3 more (23 unreadable in all)"
    assert "23 unreadable" in result.stderr  # the summary line
