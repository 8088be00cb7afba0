from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import SettingsError
from service.settings import Settings, read_env_file


def test_missing_secret_names_the_variable() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({}, env_file=None)
    assert "STATE_TOKEN_SECRET" in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize("placeholder", ["replace_with_secure_token", "  ", "your_secret_here"])
def test_placeholder_secret_is_refused(placeholder: str) -> None:
    with pytest.raises(SettingsError, match="STATE_TOKEN_SECRET"):
        Settings.from_environ({"STATE_TOKEN_SECRET": placeholder}, env_file=None)


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("STATE_TOKEN_SECRET=from-file\nTOKEN_DB_PATH=/srv/file.db\nFACEBOOK_GRAPH_VERSION=v24.0\n")
    settings = Settings.from_environ({"STATE_TOKEN_SECRET": "from-environ"}, env_file=env_file)
    assert str(settings.state_token_secret) == "from-environ"
    assert settings.database_url == "sqlite+aiosqlite:////srv/file.db"
    assert settings.facebook_graph_version == "v24.0"


def test_defaults_follow_the_seed() -> None:
    settings = Settings.from_environ({"STATE_TOKEN_SECRET": "s3cret-value"}, env_file=None)
    assert settings.database_url == "sqlite+aiosqlite:///data/tokens.db"
    assert settings.facebook_scopes == ("pages_show_list", "pages_messaging", "pages_manage_metadata")
    assert settings.shopify_admin_base_url == "https://{shop}"


def test_repr_hides_secrets() -> None:
    settings = Settings.from_environ(
        {
            "STATE_TOKEN_SECRET": "very-secret-state",
            "SHOPIFY_API_SECRET": "shpss_hidden",
            "FACEBOOK_APP_SECRET": "fbhidden",
        },
        env_file=None,
    )
    text = repr(settings)
    for secret in ("very-secret-state", "shpss_hidden", "fbhidden"):
        assert secret not in text


def test_seed_placeholders_for_provider_settings_count_as_unset() -> None:
    settings = Settings.from_environ(
        {"STATE_TOKEN_SECRET": "x-real-secret", "SHOPIFY_API_KEY": "your_shopify_api_key"}, env_file=None
    )
    assert settings.shopify_api_key is None


# --- the one .env reader ------------------------------------------------------------------------------

LONG_SECRET = "a-long-random-state-token-secret-0123456789"


def test_env_file_values_read_as_python_dotenv_reads_them(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"export STATE_TOKEN_SECRET={LONG_SECRET} # my secret\n"
        'FACEBOOK_APP_SECRET="quoted # not a comment"\n'
        "SHOPIFY_API_SECRET='single ${NOT_EXPANDED}'\n"
        "  # a comment line\n"
        "FACEBOOK_GRAPH_VERSION = v24.0   \n"
    )
    settings = Settings.from_environ({}, env_file=env_file)
    assert str(settings.state_token_secret) == LONG_SECRET
    assert str(settings.facebook_app_secret) == "quoted # not a comment"
    assert str(settings.shopify_api_secret) == "single ${NOT_EXPANDED}"
    assert settings.facebook_graph_version == "v24.0"
    assert read_env_file(env_file)["STATE_TOKEN_SECRET"] == LONG_SECRET  # what the jobs read: the same


def test_load_refuses_a_named_file_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        Settings.load(tmp_path / "missing.env")
    with pytest.raises(SettingsError, match="is a directory"):
        Settings.load(tmp_path)


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://u:p@db.example:5432/sales", "postgresql+asyncpg://u:p@db.example:5432/sales"),
        ("postgresql://u@db.example/sales", "postgresql+asyncpg://u@db.example/sales"),
        ("POSTGRESQL+ASYNCPG://u@db.example/sales", "postgresql+asyncpg://u@db.example/sales"),
        ("sqlite:///data/tokens.db", "sqlite+aiosqlite:///data/tokens.db"),
        ("sqlite+aiosqlite:////srv/tokens.db", "sqlite+aiosqlite:////srv/tokens.db"),
    ],
)
def test_database_urls_are_normalised_to_our_drivers(given: str, used: str) -> None:
    assert Settings.from_environ({"STATE_TOKEN_SECRET": "x", "DATABASE_URL": given}, env_file=None).database_url == used


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("garbage", "is not a database URL"),
        ("mysql://u@h/db", "uses mysql://"),
        ("postgresql+psycopg2://u@h/db", "uses postgresql+psycopg2://"),
        ("postgresql://u@h:notaport/db", "not a valid PostgreSQL URL"),
        ("postgresql:///db", "names no PostgreSQL host"),
        ("sqlite://", "needs a file"),
    ],
)
def test_unusable_database_urls_are_one_sentence(given: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({"STATE_TOKEN_SECRET": "x", "DATABASE_URL": given}, env_file=None)
    assert says in caught.value.message and "\n" not in caught.value.message
@pytest.mark.parametrize(
    ("scheme", "setting", "secure"),
    [
        ("https", None, True),  # https redirect URIs turn Secure on by themselves
        ("https", "", True),  # SESSION_COOKIE_SECURE= (empty, as in .env.example): automatic
        ("https", "false", False),  # the setting still overrides
        ("http", None, False),
        ("http", "true", True),
    ],
)
def test_secure_cookies_follow_the_redirect_uris_unless_set(scheme: str, setting: str | None, secure: bool) -> None:
    environ = {
        "STATE_TOKEN_SECRET": "s3cret-value",
        "SHOPIFY_REDIRECT_URI": f"{scheme}://shop.example/shopify/callback",
        "FACEBOOK_REDIRECT_URI": f"{scheme}://shop.example/facebook/callback",
    }
    if setting is not None:
        environ["SESSION_COOKIE_SECURE"] = setting
    settings = Settings.from_environ(environ, env_file=None)
    assert settings.session_cookie_secure is secure
    assert settings.served_over_https is (scheme == "https")


def test_the_shopify_api_version_is_a_quarterly_release() -> None:
    assert Settings.from_environ({"STATE_TOKEN_SECRET": "s" * 40}, env_file=None).shopify_api_version == "2026-10"
    chosen = Settings.from_environ({"STATE_TOKEN_SECRET": "s" * 40, "SHOPIFY_API_VERSION": "2027-01"}, env_file=None)
    assert chosen.shopify_api_version == "2027-01"
    for bad in ("2026-11", "v2026-10", "latest", "2026-10/../../x"):
        with pytest.raises(SettingsError, match="SHOPIFY_API_VERSION"):
            Settings.from_environ({"STATE_TOKEN_SECRET": "s" * 40, "SHOPIFY_API_VERSION": bad}, env_file=None)
