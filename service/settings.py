"""Every setting the service, the CLI, Alembic and the scripts read, read here and only here, once.

Values come from the process environment first, then from a `.env` file read by python-dotenv (the
one .env reader: settings and jobs alike). Secrets are wrapped in Starlette's `Secret`, whose repr
hides the value. See DESIGN.md, "Settings".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import Secret

from service.errors import SettingsError

DEFAULT_TOKEN_DB_PATH = "./data/tokens.db"
DEFAULT_FACEBOOK_SCOPES = ("pages_show_list", "pages_messaging", "pages_manage_metadata")
DEFAULT_SHOPIFY_SCOPES = ("read_products", "read_orders")
DEFAULT_GRAPH_VERSION = "v25.0"
# Shopify's Admin API versions are quarterly (YYYY-01, -04, -07, -10), each supported about a year.
DEFAULT_SHOPIFY_API_VERSION = "2026-10"
_SHOPIFY_API_VERSION = re.compile(r"20[0-9]{2}-(01|04|07|10)|unstable")
DEFAULT_ENV_FILE = ".env"
# A shorter STATE_TOKEN_SECRET is refused by `serve` and `migrate` (service/security.py), a shorter
# EVENTS_WEBHOOK_SECRET by every command.
MIN_SECRET_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 16
DEFAULT_API_RATE_PER_MINUTE = 600
LOG_FORMATS = ("text", "json")
DEFAULT_EVENTS_RETENTION_DAYS = 400
# Hosting platforms write postgres:// and postgresql://; we run on the asyncpg and aiosqlite drivers.
_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}

# Values the seed's .env.example and common templates ship with. Running with one of them would
# mean every deployment shares a key, so they count as missing.
_PLACEHOLDERS = {"", "replace_with_secure_token", "changeme", "change_me", "secret", "your_secret"}


def _is_placeholder(value: str) -> bool:
    return value.strip().lower() in _PLACEHOLDERS or value.strip().lower().startswith("your_")


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """A .env file's values, as python-dotenv reads them (`export `, quotes, `# comments` after a value).
    Values are taken literally, never `${VAR}`-expanded: a secret that happens to hold `${` stays whole."""
    from dotenv import dotenv_values

    try:
        values = dotenv_values(path, interpolate=False, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"The settings file {path} cannot be read ({type(error).__name__}).") from None
    return {name: value for name, value in values.items() if value is not None}


def settings_file(env_file: str | os.PathLike[str] | None) -> Path | None:
    """The file a command reads after the environment: one it was given must exist; ./.env only if present."""
    if env_file is None:
        default = Path(DEFAULT_ENV_FILE)
        return default if default.is_file() else None
    path = Path(env_file)
    if path.is_dir():
        raise SettingsError(f"The settings file {path} is a directory, not a file.")
    if not path.is_file():
        raise SettingsError(f"The settings file {path} does not exist (no such file).")
    return path


def normalize_database_url(value: str) -> str:
    """postgres:// and postgresql:// become postgresql+asyncpg://, sqlite:// sqlite+aiosqlite://; anything
    that is not a URL for one of those two drivers is refused here, in one sentence."""
    scheme, separator, rest = value.partition("://")
    driver = _DRIVERS.get(scheme.lower()) if separator else None
    if driver is None:
        shown = f"uses {scheme}://" if separator and scheme else "is not a database URL"
        raise SettingsError(
            f"DATABASE_URL {shown}: give postgresql://user@host:5432/name or sqlite:///path/to/tokens.db "
            "(or leave it empty for TOKEN_DB_PATH)."
        )
    if driver.startswith("postgresql"):
        try:
            parts = urlsplit(f"{driver}://{rest}")
            parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
        except ValueError:
            raise SettingsError("DATABASE_URL is not a valid PostgreSQL URL (check the host and port).") from None
        if not parts.hostname and "host=" not in parts.query:
            raise SettingsError("DATABASE_URL names no PostgreSQL host: give postgresql://user@host:5432/name.")
    elif not rest.startswith("/") or rest in ("/", "/:memory:"):
        raise SettingsError("DATABASE_URL for SQLite needs a file: sqlite:///relative/path.db or sqlite:////absolute.")
    return f"{driver}://{rest}"


@dataclass(frozen=True)
class Settings:
    state_token_secret: Secret
    database_url: str
    token_db_path: Path = Path(DEFAULT_TOKEN_DB_PATH)
    token_encryption_keys: tuple[Secret, ...] = ()
    # The seed kept OAuth sessions in a second SQLite file. Here the OAuth state lives in the token
    # database (so several instances agree); the setting is accepted so old .env files still load.
    session_db_path: str | None = None

    shopify_api_key: str | None = None
    shopify_api_secret: Secret | None = None
    shopify_redirect_uri: str | None = None
    shopify_scopes: tuple[str, ...] = DEFAULT_SHOPIFY_SCOPES
    shopify_admin_base_url: str = "https://{shop}"
    shopify_api_version: str = DEFAULT_SHOPIFY_API_VERSION

    facebook_app_id: str | None = None
    facebook_app_secret: Secret | None = None
    facebook_redirect_uri: str | None = None
    facebook_scopes: tuple[str, ...] = DEFAULT_FACEBOOK_SCOPES
    facebook_graph_version: str = DEFAULT_GRAPH_VERSION
    facebook_dialog_base_url: str = "https://www.facebook.com"
    facebook_graph_base_url: str = "https://graph.facebook.com"

    # Cookies get the Secure flag when the service is reached over HTTPS (any real deployment); unset,
    # it follows the redirect URIs.
    session_cookie_secure: bool = False
    http_timeout_seconds: float = 10.0
    # GET /metrics answers a scraper that sends it as a bearer token; unset, the route does not exist.
    metrics_token: Secret | None = None
    log_format: str = "text"  # or "json": one object a line (service/logs.py)

    # The event log (DESIGN.md, "The event log"): how long events are kept, and the team's webhook.
    events_retention_days: int = DEFAULT_EVENTS_RETENTION_DAYS
    events_webhook_url: str | None = None
    events_webhook_secret: Secret | None = None
    # The HTTP API (service/routes/api.py): requests each API key may make a minute, in each process.
    api_rate_per_minute: int = DEFAULT_API_RATE_PER_MINUTE
    # Where this setting object came from, for messages that point at a file.
    env_file: Path | None = field(default=None, compare=False)

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, env_file: str | os.PathLike[str] | None = ".env"
    ) -> Settings:
        environ = os.environ if environ is None else environ
        env_path = Path(env_file) if env_file is not None else None
        if env_path is not None and not env_path.is_file():
            env_path = None
        file_values = read_env_file(env_path) if env_path is not None else {}

        def text(name: str, default: str | None = None) -> str | None:
            value = environ.get(name, file_values.get(name, default))
            return None if value is None or value.strip() == "" else value.strip()

        secret = text("STATE_TOKEN_SECRET")
        if secret is None or _is_placeholder(secret):
            state = "missing" if secret is None else "still the placeholder value"
            raise SettingsError(
                f"STATE_TOKEN_SECRET is {state}: set it to a long random string in the environment or in .env "
                "(see .env.example)."
            )

        token_db_path = Path(text("TOKEN_DB_PATH", DEFAULT_TOKEN_DB_PATH) or DEFAULT_TOKEN_DB_PATH)
        given_url = text("DATABASE_URL")
        database_url = normalize_database_url(given_url) if given_url else sqlite_url(token_db_path)

        def secret_or_none(name: str) -> Secret | None:
            value = text(name)
            return None if value is None or _is_placeholder(value) else Secret(value)

        def not_placeholder(name: str) -> str | None:
            value = text(name)
            return None if value is None or _is_placeholder(value) else value

        redirect_uris = (text("SHOPIFY_REDIRECT_URI"), text("FACEBOOK_REDIRECT_URI"))
        timeout_text = text("HTTP_TIMEOUT_SECONDS", "10")
        try:
            timeout = float(timeout_text or "10")
        except ValueError:
            raise SettingsError("HTTP_TIMEOUT_SECONDS must be a number of seconds.") from None

        api_version = text("SHOPIFY_API_VERSION") or DEFAULT_SHOPIFY_API_VERSION
        if not _SHOPIFY_API_VERSION.fullmatch(api_version):
            raise SettingsError(
                "SHOPIFY_API_VERSION must be a Shopify Admin API version such as "
                f"{DEFAULT_SHOPIFY_API_VERSION} (YYYY-01, -04, -07 or -10)."
            )

        metrics_token = secret_or_none("METRICS_TOKEN")
        if metrics_token is not None and len(str(metrics_token)) < MIN_METRICS_TOKEN_LENGTH:
            raise SettingsError(
                f"METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} random characters (it guards /metrics)."
            )
        log_format = (text("LOG_FORMAT") or "text").lower()
        if log_format not in LOG_FORMATS:
            raise SettingsError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}.")
        webhook_url, webhook_secret = _events_webhook(text("EVENTS_WEBHOOK_URL"), text("EVENTS_WEBHOOK_SECRET"))
        if webhook_url is not None and origin(webhook_url) in {origin(uri) for uri in redirect_uris if uri}:
            raise SettingsError(
                "EVENTS_WEBHOOK_URL points at this service itself (the host of its redirect URIs): give the "
                "address of the team's own receiver."
            )
        retention_text = text("EVENTS_RETENTION_DAYS", str(DEFAULT_EVENTS_RETENTION_DAYS)) or ""
        if not retention_text.isdigit() or int(retention_text) < 1:
            raise SettingsError("EVENTS_RETENTION_DAYS must be a whole number of days, at least 1.")

        rate_text = text("API_RATE_PER_MINUTE", str(DEFAULT_API_RATE_PER_MINUTE)) or ""
        if not rate_text.isdigit() or int(rate_text) < 1:
            raise SettingsError("API_RATE_PER_MINUTE must be a whole number of requests, at least 1.")

        return cls(
            state_token_secret=Secret(secret),
            database_url=database_url,
            token_db_path=token_db_path,
            token_encryption_keys=tuple(Secret(key) for key in _split(text("TOKEN_ENCRYPTION_KEYS", "") or "")),
            session_db_path=text("SESSION_DB_PATH"),
            shopify_api_key=not_placeholder("SHOPIFY_API_KEY"),
            shopify_api_secret=secret_or_none("SHOPIFY_API_SECRET"),
            shopify_redirect_uri=text("SHOPIFY_REDIRECT_URI"),
            shopify_scopes=_split(text("SHOPIFY_SCOPES", "") or "") or DEFAULT_SHOPIFY_SCOPES,
            shopify_admin_base_url=text("SHOPIFY_ADMIN_BASE_URL") or "https://{shop}",
            shopify_api_version=api_version,
            facebook_app_id=not_placeholder("FACEBOOK_APP_ID"),
            facebook_app_secret=secret_or_none("FACEBOOK_APP_SECRET"),
            facebook_redirect_uri=text("FACEBOOK_REDIRECT_URI"),
            facebook_scopes=_split(text("FACEBOOK_SCOPES", "") or "") or DEFAULT_FACEBOOK_SCOPES,
            facebook_graph_version=text("FACEBOOK_GRAPH_VERSION") or DEFAULT_GRAPH_VERSION,
            facebook_dialog_base_url=(text("FACEBOOK_DIALOG_BASE_URL") or "https://www.facebook.com").rstrip("/"),
            facebook_graph_base_url=(text("FACEBOOK_GRAPH_BASE_URL") or "https://graph.facebook.com").rstrip("/"),
            session_cookie_secure=_flag(text("SESSION_COOKIE_SECURE"), default=_https(redirect_uris)),
            http_timeout_seconds=timeout,
            metrics_token=metrics_token,
            log_format=log_format,
            events_retention_days=int(retention_text),
            events_webhook_url=webhook_url,
            events_webhook_secret=webhook_secret,
            api_rate_per_minute=int(rate_text),
            env_file=env_path,
        )

    @classmethod
    def load(cls, env_file: str | os.PathLike[str] | None = None) -> Settings:
        """What every command reads: the environment, then `env_file` (which must exist) or ./.env if any."""
        return cls.from_environ(env_file=settings_file(env_file))

    def with_database(self, database_url: str) -> Settings:
        return replace(self, database_url=database_url)

    @property
    def weak_secret(self) -> bool:
        return len(str(self.state_token_secret)) < MIN_SECRET_LENGTH

    @property
    def missing_provider_settings(self) -> list[str]:
        """The Shopify and Facebook settings this deployment lacks (empty: both flows can run)."""
        wanted = {
            "SHOPIFY_API_KEY": self.shopify_api_key,
            "SHOPIFY_API_SECRET": self.shopify_api_secret,
            "SHOPIFY_REDIRECT_URI": self.shopify_redirect_uri,
            "FACEBOOK_APP_ID": self.facebook_app_id,
            "FACEBOOK_APP_SECRET": self.facebook_app_secret,
            "FACEBOOK_REDIRECT_URI": self.facebook_redirect_uri,
        }
        return [name for name, value in wanted.items() if not value]

    @property
    def served_over_https(self) -> bool:
        """Whether the service's public address is https, as its redirect URIs say."""
        return _https((self.shopify_redirect_uri, self.facebook_redirect_uri))


def _events_webhook(url: str | None, secret: str | None) -> tuple[str | None, Secret | None]:
    """The webhook's URL and secret, refused in one line each when they cannot be used."""
    if url is None:
        return None, Secret(secret) if secret else None
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise SettingsError("EVENTS_WEBHOOK_URL must be an http:// or https:// URL with a host.")
    if secret is None or len(secret) < MIN_SECRET_LENGTH:
        raise SettingsError(
            f"EVENTS_WEBHOOK_SECRET must be at least {MIN_SECRET_LENGTH} random characters when EVENTS_WEBHOOK_URL "
            "is set: it signs every delivery (python -c 'import secrets; print(secrets.token_urlsafe(32))')."
        )
    return url, Secret(secret)


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, default ports filled in; None when it has no host."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname or scheme not in ("http", "https"):
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def _https(uris: tuple[str | None, ...]) -> bool:
    given = [uri for uri in uris if uri]
    return bool(given) and all(uri.lower().startswith("https://") for uri in given)


def _flag(value: str | None, *, default: bool) -> bool:
    return default if value is None else value.lower() in {"1", "true", "yes"}


def sqlite_url(path: str | os.PathLike[str]) -> str:
    return f"sqlite+aiosqlite:///{Path(path)}"
