"""`salesbot import-env`: the seed's environment-variable tokens into the store, linked like the flows link."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.jobs.base import JobError
from service.jobs.import_env import import_env
from service.settings import Settings, read_env_file
from tests.jobs.helpers import ACCOUNT, OTHER_ACCOUNT, cli_environ, dump, opened, salesbot

ENV_FILE = f"""
# chapter 2 .env
export SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr="shpat_env_token"
USER_UUID_acme-7cu19ngr={ACCOUNT}
FACEBOOK_ACCESS_TOKEN_1234='EAA-page-token'   # the Page token
PAGE_UUID_1234 = {ACCOUNT}
FACEBOOK_USER_ACCESS_TOKEN=EAA-global-user
SHOPIFY_API_KEY=not-a-token
"""
EXPECTED = {
    "SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr": "shpat_env_token",
    "USER_UUID_acme-7cu19ngr": ACCOUNT,
    "FACEBOOK_ACCESS_TOKEN_1234": "EAA-page-token",
    "PAGE_UUID_1234": ACCOUNT,
    "FACEBOOK_USER_ACCESS_TOKEN": "EAA-global-user",
}


def env_file(tmp_path: Path, content: str = ENV_FILE) -> Path:
    path = tmp_path / "chapter2.env"
    path.write_text(content)
    return path


def test_env_file_parsing_handles_quotes_comments_and_export(tmp_path: Path) -> None:
    parsed = read_env_file(
        env_file(tmp_path, ENV_FILE + 'FACEBOOK_ACCESS_TOKEN_5="a \\"quoted\\" #value"\nnot a line\n')
    )
    wrong = [key for key, value in EXPECTED.items() if parsed.get(key) != value]
    assert wrong == []
    assert parsed["FACEBOOK_ACCESS_TOKEN_5"] == 'a "quoted" #value'
    assert "not a line" not in " ".join(parsed)


async def test_import_links_uuid_entries_and_tokens_to_the_account(migrated: Settings, tmp_path: Path) -> None:
    environ = {"FACEBOOK_USER_ACCESS_TOKEN_99": "EAA-user-99", "PATH": "/bin"}
    async with opened(migrated) as store:
        report = await import_env(store, environ=environ, env_file=env_file(tmp_path))
        for key, value in EXPECTED.items():
            assert await store.get_token(key) == value, key
        records = {record.key: record for record in await store.list_tokens()}
    assert report.ok and report.count("imported") == 6 and "6 imported" in report.summary()
    for key in ("SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr", "USER_UUID_acme-7cu19ngr", "FACEBOOK_ACCESS_TOKEN_1234"):
        assert records[key].account_uuid == ACCOUNT, key
    assert records["PAGE_UUID_1234"].type == "uuid" and records["FACEBOOK_ACCESS_TOKEN_1234"].type == "token"
    assert records["SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr"].provider == "shopify"
    assert records["FACEBOOK_USER_ACCESS_TOKEN"].provider == "facebook"
    assert records["FACEBOOK_USER_ACCESS_TOKEN"].account_uuid is None
    assert any("not tied" in warning for warning in report.warnings)
    assert "SHOPIFY_API_KEY" not in records


async def test_second_run_changes_nothing(migrated: Settings, tmp_path: Path) -> None:
    path = env_file(tmp_path)
    async with opened(migrated) as store:
        await import_env(store, environ={}, env_file=path)
        before = await dump(store)
        again = await import_env(store, environ={}, env_file=path)
        assert await dump(store) == before
    assert again.ok and again.count("unchanged") == 5 and again.count("imported") == 0


async def test_a_different_stored_value_is_kept_unless_overwrite(migrated: Settings, tmp_path: Path) -> None:
    path = env_file(tmp_path)
    async with opened(migrated) as store:
        await store.store_token("FACEBOOK_ACCESS_TOKEN_1234", "EAA-newer-from-oauth")
        kept = await import_env(store, environ={}, env_file=path)
        assert await store.get_token("FACEBOOK_ACCESS_TOKEN_1234") == "EAA-newer-from-oauth"
        replaced = await import_env(store, environ={}, env_file=path, overwrite=True)
        assert await store.get_token("FACEBOOK_ACCESS_TOKEN_1234") == "EAA-page-token"
    skipped = [o for o in kept.outcomes if o.status == "skipped"]
    assert [o.key for o in skipped] == ["FACEBOOK_ACCESS_TOKEN_1234"] and "--overwrite" in skipped[0].reason
    assert not kept.ok
    assert replaced.ok and [o.key for o in replaced.outcomes if o.status == "replaced"] == [
        "FACEBOOK_ACCESS_TOKEN_1234"
    ]


async def test_bad_input_changes_nothing(migrated: Settings, tmp_path: Path) -> None:
    async with opened(migrated) as store:
        before = await dump(store)
        with pytest.raises(JobError, match="does not exist"):
            await import_env(store, environ={}, env_file=tmp_path / "missing.env")
        environ = {"PAGE_UUID_77": "not-a-uuid", "FACEBOOK_ACCESS_TOKEN_77": " ", "USER_UUID_x": OTHER_ACCOUNT}
        file = env_file(tmp_path, f"USER_UUID_x={ACCOUNT}\n")
        report = await import_env(store, environ=environ, env_file=file)
        assert await dump(store) == before
    reasons = {outcome.key: outcome.reason for outcome in report.outcomes}
    assert reasons["PAGE_UUID_77"] == "not a UUID"
    assert reasons["FACEBOOK_ACCESS_TOKEN_77"] == "empty value"
    assert "different values" in reasons["USER_UUID_x"]
    assert not report.ok and report.count("skipped") == 3


async def test_dry_run_writes_nothing(migrated: Settings, tmp_path: Path) -> None:
    async with opened(migrated) as store:
        before = await dump(store)
        report = await import_env(store, environ={}, env_file=env_file(tmp_path), dry_run=True)
        assert await dump(store) == before
    assert report.count("imported") == 5 and "would import" in report.summary()
    assert report.outcomes[0].line(dry_run=True).startswith("would import")


async def test_interrupted_import_resumes(migrated: Settings, tmp_path: Path) -> None:
    path = env_file(tmp_path)

    def stop(done: int) -> None:
        raise KeyboardInterrupt

    async with opened(migrated) as store:
        with pytest.raises(KeyboardInterrupt):
            await import_env(store, environ={}, env_file=path, batch_size=2, after_batch=stop)
        assert len(await store.list_tokens()) == 2
        report = await import_env(store, environ={}, env_file=path, batch_size=2)
        assert len(await store.list_tokens()) == 5
        assert await store.account_of("FACEBOOK_ACCESS_TOKEN_1234") == ACCOUNT
    assert (report.count("unchanged"), report.count("imported"), report.ok) == (2, 3, True)


async def test_the_command_line_prints_keys_never_values(migrated: Settings, tmp_path: Path) -> None:
    path = env_file(tmp_path)
    environ = cli_environ(migrated, FACEBOOK_ACCESS_TOKEN_42="EAA-from-environ")
    result = salesbot("import-env", "--env-file", str(path), cwd=tmp_path, environ=environ)
    assert result.returncode == 0, result.stderr
    assert "imported       FACEBOOK_ACCESS_TOKEN_42" in result.stdout
    assert "6 imported" in result.stderr and "not tied" in result.stderr
    assert all(value not in result.stdout + result.stderr for value in ["EAA-from-environ", *EXPECTED.values()])
    missing = salesbot("import-env", "--env-file", str(tmp_path / "nope.env"), cwd=tmp_path, environ=environ)
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
