"""The first run tells you what to do next: the missing settings, `salesbot demo`, and one host name."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from service.settings import read_env_file
from tests.command import ROOT, salesbot
from tests.conftest import STATE_SECRET
from tests.demo_server import free_port, salesbot_server
from tests.web import FACEBOOK_APP_ID, FACEBOOK_SECRET, SHOPIFY_KEY, SHOPIFY_SECRET

PROVIDER_SETTINGS = [
    "SHOPIFY_API_KEY",
    "SHOPIFY_API_SECRET",
    "SHOPIFY_REDIRECT_URI",
    "FACEBOOK_APP_ID",
    "FACEBOOK_APP_SECRET",
    "FACEBOOK_REDIRECT_URI",
]


def serve_log(tmp_path: Path, environ: dict[str, str]) -> list[str]:
    """Start `salesbot serve`, wait until it answers, stop it; the WARNING lines it printed."""
    assert salesbot("migrate", cwd=tmp_path, environ=environ).returncode == 0
    log = tmp_path / "serve.log"
    with salesbot_server("serve", env=environ, cwd=tmp_path, log=log):
        pass
    return [line for line in log.read_text().splitlines() if "WARNING" in line]


def test_serve_without_credentials_warns_once_naming_them_and_pointing_at_the_demo(tmp_path: Path) -> None:
    warnings = serve_log(tmp_path, {"STATE_TOKEN_SECRET": STATE_SECRET})
    assert len(warnings) == 1, warnings
    assert all(name in warnings[0] for name in PROVIDER_SETTINGS) and "salesbot demo" in warnings[0]


def test_serve_names_only_what_is_missing(tmp_path: Path) -> None:
    environ = {
        "STATE_TOKEN_SECRET": STATE_SECRET,
        "SHOPIFY_API_KEY": SHOPIFY_KEY,
        "SHOPIFY_API_SECRET": SHOPIFY_SECRET,
        "SHOPIFY_REDIRECT_URI": "http://127.0.0.1:5000/shopify/callback",
    }
    (warning,) = serve_log(tmp_path, environ)
    assert "FACEBOOK_APP_ID, FACEBOOK_APP_SECRET, FACEBOOK_REDIRECT_URI" in warning and "SHOPIFY" not in warning


def test_serve_with_both_providers_configured_warns_nothing(tmp_path: Path) -> None:
    port = free_port()
    environ = {
        "STATE_TOKEN_SECRET": STATE_SECRET,
        "SHOPIFY_API_KEY": SHOPIFY_KEY,
        "SHOPIFY_API_SECRET": SHOPIFY_SECRET,
        "SHOPIFY_REDIRECT_URI": f"http://127.0.0.1:{port}/shopify/callback",
        "FACEBOOK_APP_ID": FACEBOOK_APP_ID,
        "FACEBOOK_APP_SECRET": FACEBOOK_SECRET,
        "FACEBOOK_REDIRECT_URI": f"http://127.0.0.1:{port}/facebook/callback",
    }
    assert salesbot("migrate", cwd=tmp_path, environ=environ).returncode == 0
    log = tmp_path / "serve.log"
    with salesbot_server("serve", env=environ, cwd=tmp_path, port=port, log=log) as base:
        # The real server on 127.0.0.1, reached as localhost: sent back to 127.0.0.1 before any state is made.
        elsewhere = httpx.get(f"http://localhost:{port}/shopify/acme-7cu19ngr/login", timeout=10)
        assert elsewhere.status_code == 307
        assert elsewhere.headers["location"] == f"{base}/shopify/acme-7cu19ngr/login?host_checked=1"
        states = sqlite3.connect(tmp_path / "data" / "tokens.db").execute("SELECT count(*) FROM oauth_states")
        assert states.fetchone() == (0,)
        started = httpx.get(elsewhere.headers["location"], timeout=10)
        assert started.status_code == 302 and "acme-7cu19ngr.myshopify.com" in started.headers["location"]
    assert "WARNING" not in log.read_text()


def test_env_example_uses_the_host_name_the_readme_advises() -> None:
    example = read_env_file(ROOT / ".env.example")
    for name in ("SHOPIFY_REDIRECT_URI", "FACEBOOK_REDIRECT_URI"):
        assert urlsplit(example[name]).hostname == "127.0.0.1", name
