"""Demo mode: the whole service plus local Shopify and Facebook stand-ins, in one process.

A throwaway secret and key, a fresh SQLite file in a temporary directory, and the sandbox mounted
at /sandbox, so a newcomer can click through both flows with no accounts anywhere. The webhook
buttons on the status page make the sandbox send what Shopify and Facebook would send, for this
browser's own connections only (anything else is 404). SALESBOT_DEMO_PAGES (a JSON list of [id, name])
replaces the stand-in's three Pages; SALESBOT_DEMO_PROVIDERS_URL (another name for the demo's own address)
is where the stand-ins are reached. The example
bot (service/bot_example.py) runs at /bot with a store of its own, as a bot process would, and a
button writes to a Page as a shopper; /sandbox/messenger shows the conversation. Another form makes
the stand-in's Facebook kill a Page's token (or let its data access run out, or take back a permission)
and checks that Page at once, so each health state can be seen. A read key and a proxy key of the
HTTP API are made at start and shown on the page, so docs/api.md's examples run against the demo.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from salesbot_sandbox import DEFAULT_PAGES, Sandbox, SandboxConfig
from service import api_keys, disconnect, keys, migrate
from service.app import create_app
from service.bot_example import create_bot
from service.crypto import KeyRing, generate_key
from service.errors import NotFound, SettingsError
from service.providers.http import numeric_id
from service.providers.shopify import normalize_shop
from service.routes.common import own_account, services
from service.routes.forms import checked_form
from service.settings import Settings, sqlite_url
from service.sweep import Sweep
from service.vault import TokenStore

DEMO_SHOPIFY_KEY = "demo-shopify-api-key"
DEMO_FACEBOOK_APP_ID = "1000000000000001"
DEMO_SHOPPER = "7001"  # the page-scoped id the demo's shopper writes from
BOT_ENV = "demo-bot.env"


def demo_environ(base_url: str, data_dir: Path, providers_url: str | None = None) -> dict[str, str]:
    """The demo's settings; the stand-ins are reached at `providers_url` (default: the demo's own address)."""
    stand_ins = f"{providers_url or base_url}/sandbox"
    return {
        "STATE_TOKEN_SECRET": secrets.token_urlsafe(32),
        "TOKEN_ENCRYPTION_KEYS": generate_key(),
        "DATABASE_URL": sqlite_url(data_dir / "demo.db"),
        "SHOPIFY_API_KEY": DEMO_SHOPIFY_KEY,
        "SHOPIFY_API_SECRET": secrets.token_urlsafe(24),
        "SHOPIFY_REDIRECT_URI": f"{base_url}/shopify/callback",
        "SHOPIFY_ADMIN_BASE_URL": f"{stand_ins}/shopify/{{shop}}",
        "FACEBOOK_APP_ID": DEMO_FACEBOOK_APP_ID,
        "FACEBOOK_APP_SECRET": secrets.token_urlsafe(24),
        "FACEBOOK_REDIRECT_URI": f"{base_url}/facebook/callback",
        "FACEBOOK_DIALOG_BASE_URL": f"{stand_ins}/facebook",
        "FACEBOOK_GRAPH_BASE_URL": f"{stand_ins}/graph",
    }


def demo_settings(base_url: str, data_dir: Path, providers_url: str | None = None) -> Settings:
    return Settings.from_environ(demo_environ(base_url, data_dir, providers_url), env_file=None)


def write_bot_env(path: Path, environ: dict[str, str]) -> Path:
    """The settings a bot process needs to read the demo's data (README, "From the bot"), as a .env file
    only its owner can read: the demo's secrets are throwaway, but they are secrets."""
    lines = ["# Written by `salesbot demo` for a bot process; gone when the demo stops.\n"]
    lines += [f"{name}='{value}'\n" for name, value in environ.items()]  # quoted: literal to dotenv and shells
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(lines)
    return path


def demo_pages(environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """The stand-in's Pages: SALESBOT_DEMO_PAGES, a JSON list of [id, name] pairs, or its own three."""
    raw = (os.environ if environ is None else environ).get("SALESBOT_DEMO_PAGES")
    if not raw:
        return list(DEFAULT_PAGES)
    try:
        return [(str(page_id), str(name)) for page_id, name in json.loads(raw)]
    except (ValueError, TypeError):
        raise SettingsError('SALESBOT_DEMO_PAGES must be a JSON list of [id, name] pairs: [["101", "Acme"]].') from None


def _account(request: Request) -> str:
    # The buttons act on this browser's own connections only: a store, a Facebook login, a Page of its account.
    return own_account(request, to="send a webhook for")


async def _uninstall(request: Request) -> Response:
    app = services(request)
    form = await checked_form(request)
    shop = normalize_shop(str(form.get("shop", "")))
    await disconnect.shop_to_disconnect(app.store, domain=shop, account=_account(request))  # or NotFound
    body, headers = app.demo.shopify_webhook(shop=shop, topic="app/uninstalled")
    await app.demo.deliver("/shopify/webhooks", body, headers, client=app.http)
    return RedirectResponse("/", status_code=303)


async def _deauthorize(request: Request) -> Response:
    app = services(request)
    await checked_form(request)
    user = app.demo.config.facebook_user_id
    records = await app.store.list_tokens(account_uuid=_account(request))
    if not any(record.granted_by == user or record.key == keys.facebook_user_token_key(user) for record in records):
        raise NotFound("The demo's Facebook user connected nothing in this account.")
    signed = app.demo.facebook_signed_request({"user_id": user})
    await app.http.post(f"{app.demo.config.service_base_url}/facebook/deauthorize", data={"signed_request": signed})
    return RedirectResponse("/", status_code=303)


async def _page_event(request: Request) -> Response:
    """Make the stand-in's Facebook do something to a Page's token (Sandbox.PAGE_EVENTS), then check that
    Page at once, as the sweep would within a day (service/sweep.py)."""
    app = services(request)
    form = await checked_form(request)
    page_id, event = str(form.get("page_id", "")), str(form.get("event", ""))
    if not numeric_id(page_id):
        raise NotFound("This account has no Page like that.")
    await disconnect.page_to_disconnect(app.store, page_id=page_id, account=_account(request))  # or NotFound
    if event in app.demo.PAGE_EVENTS:
        app.demo.page_event(page_id, event)
        await Sweep(app.store, app.http).check_page_now(page_id)
    return RedirectResponse("/", status_code=303)


async def _message(request: Request) -> Response:
    app = services(request)
    form = await checked_form(request)
    page_id, text = str(form.get("page_id", "")), str(form.get("text", "")).strip()
    if not numeric_id(page_id):
        raise NotFound("This account has no Page like that.")
    await disconnect.page_to_disconnect(app.store, page_id=page_id, account=_account(request))  # or NotFound
    if text:
        await app.demo.send_messenger_message(
            "/bot/webhook", page_id=page_id, psid=DEMO_SHOPPER, text=text[:500], client=app.http
        )
    return RedirectResponse("/sandbox/messenger", status_code=303)


async def make_api_keys(store: TokenStore) -> dict[str, str]:
    """The demo's keys of the HTTP API, one per scope, for the examples in docs/api.md (shown on its page)."""
    made = {}
    for scope in api_keys.SCOPES:
        _key, made[scope] = await api_keys.create(store, name=f"demo-{scope}", scope=scope)
    return made


def _also(lifespan: Callable[[Any], Any], bot: Starlette) -> Callable[[Any], Any]:
    """The app's lifespan, with the bot's inside it (Starlette does not run a mounted app's lifespan), and
    the demo's API keys made once the store is open."""

    @contextlib.asynccontextmanager
    async def both(app: Any) -> AsyncIterator[None]:
        async with lifespan(app), bot.router.lifespan_context(bot):
            if not getattr(app.state, "demo_api_keys", None):
                app.state.demo_api_keys = await make_api_keys(app.state.services.store)
            yield

    return both


def create_demo_app(host: str, port: int, data_dir: Path) -> tuple[Starlette, Settings]:
    """The demo app, its database migrated, ready for uvicorn on host:port."""
    base_url = f"http://{host}:{port}"
    # Another name for this same server (http://localhost:PORT) puts the consent pages on another origin,
    # as the real ones are: the browser test completes both flows so, under the pages' form-action.
    environ = demo_environ(base_url, data_dir, os.environ.get("SALESBOT_DEMO_PROVIDERS_URL"))
    settings = Settings.from_environ(environ, env_file=None)
    migrate.upgrade(settings.database_url, KeyRing.from_settings(settings))
    sandbox = Sandbox(
        SandboxConfig(
            shopify_api_key=DEMO_SHOPIFY_KEY,
            shopify_api_secret=str(settings.shopify_api_secret),
            facebook_app_id=DEMO_FACEBOOK_APP_ID,
            facebook_app_secret=str(settings.facebook_app_secret),
            service_base_url=base_url,
            pages=demo_pages(),
        )
    )
    bot = create_bot(settings, verify_token=secrets.token_urlsafe(16))
    routes = [
        Mount("/sandbox", app=sandbox.app),
        Mount("/bot", app=bot),
        Route("/demo/uninstall", _uninstall, methods=["POST"]),
        Route("/demo/deauthorize", _deauthorize, methods=["POST"]),
        Route("/demo/message", _message, methods=["POST"]),
        Route("/demo/page-event", _page_event, methods=["POST"]),
    ]
    app = create_app(settings, extra_routes=routes, demo=sandbox)
    app.router.lifespan_context = _also(app.router.lifespan_context, bot)
    app.state.bot_env = write_bot_env(data_dir / BOT_ENV, environ)
    return app, settings
