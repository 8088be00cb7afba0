"""What every route shares: the app's parts, the browser session, and turning errors into responses."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import Message

from service.errors import NotConfigured, NotFound, ServiceError
from service.providers import facebook
from service.settings import Settings
from service.vault import ShopifyTokens, TokenStore

API_PATH = "/api/"  # service/routes/api.py
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))


def _when(iso: str | None, absent: str) -> str:
    # The page shows "2026-11-25 23:20 UTC"; JSON keeps the ISO form for scripts.
    return absent if iso is None else iso[:16].replace("T", " ") + " UTC"


def segment(value: object) -> str:
    """A value as one URL path segment: "/", "." and "%" encoded, so an id can never climb to another route."""
    return quote(str(value), safe="")


templates.env.filters["when"] = _when
templates.env.filters["segment"] = segment

TITLES = {
    "access_denied": "Nothing was connected",
    "invalid_state": "This sign-in link cannot be used",
    "invalid_shop": "That is not a Shopify shop name",
    "not_configured": "This connection is not set up yet",
    "provider_error": "The provider gave an unexpected answer",
    "provider_unavailable": "The provider did not answer",
    "token_revoked": "Access was revoked",
    "scope_mismatch": "Some permissions were not granted",
    "database_unavailable": "The service cannot reach its database",
    "shop_owned_elsewhere": "This store belongs to another account",
    "facebook_user_owned_elsewhere": "This Facebook login belongs to another account",
    "page_owned_elsewhere": "Some Pages belong to another account",
    "too_many_sign_ins": "Too many unfinished sign-ins",
    "csrf_failed": "This form could not be accepted",
    "invalid_choice": "That choice is not on the form",
    "not_found": "Nothing here",
    "invalid_provider_id": "The provider gave an unexpected answer",
}


# Pages that show an account or an error: never cached. (No page is framed by another site: service/headers.py.)
PRIVATE_PAGE_HEADERS = {"Cache-Control": "no-store"}


@dataclass
class Services:
    """The parts routes need, built once in the app's lifespan."""

    settings: Settings
    store: TokenStore
    http: httpx.AsyncClient
    shopify_tokens: ShopifyTokens
    demo: Any = None  # the Sandbox, in demo mode
    api_usage: Any = None  # api_keys.Usage: each API key's calls, written every few seconds
    api_limiter: Any = None  # routes/api.Limiter: API_RATE_PER_MINUTE per key


def require_settings(provider: str, **values: object) -> None:
    """Refuse a route whose settings this deployment did not give, naming each missing variable."""
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise NotConfigured(f"{provider} is not configured: set {', '.join(missing)}.")


def services(request: Request) -> Services:
    return request.app.state.services


def facebook_credentials(settings: Settings) -> tuple[str, str, str]:
    require_settings(
        "Facebook",
        FACEBOOK_APP_ID=settings.facebook_app_id,
        FACEBOOK_APP_SECRET=settings.facebook_app_secret,
        FACEBOOK_REDIRECT_URI=settings.facebook_redirect_uri,
    )
    return settings.facebook_app_id, str(settings.facebook_app_secret), settings.facebook_redirect_uri  # type: ignore[return-value]


def graph_for(request: Request) -> facebook.Graph:
    app = services(request)
    app_id, app_secret, _redirect_uri = facebook_credentials(app.settings)
    return facebook.Graph(
        app.http,
        graph_base=app.settings.facebook_graph_base_url,
        version=app.settings.facebook_graph_version,
        app_id=app_id,
        app_secret=app_secret,
    )


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def wants_page(request: Request) -> bool:
    """A person in a browser, who gets pages: any GET that does not ask for JSON, and a form a browser
    POSTs (it accepts text/html). Webhooks and scripts get JSON."""
    if wants_json(request) or request.scope["path"].startswith(API_PATH):  # not .url: a raw query may not decode
        return False  # the HTTP API answers JSON whatever the client accepts
    return request.method == "GET" or "text/html" in request.headers.get("accept", "")


def browser_nonce(request: Request, *, create: bool) -> str | None:
    """The random value that identifies this browser in its session (service/sessions.py)."""
    nonce = request.session.get("browser")
    if nonce is None and create:
        nonce = request.session["browser"] = secrets.token_urlsafe(24)
    return nonce


def client_ip(request: Request) -> str | None:
    # uvicorn sets this from X-Forwarded-For when the proxy is trusted (--forwarded-allow-ips).
    return request.client.host[:64] if request.client else None


def session_account(request: Request) -> str | None:
    account = request.session.get("account")
    return account if isinstance(account, str) else None


def own_account(request: Request, *, to: str) -> str:
    """This browser's account, for a step that acts on its own connections only; NotFound without one."""
    account = session_account(request)
    if account is None:
        raise NotFound(f"This browser has no account, so there is nothing to {to}.")
    return account


async def read_body(request: Request, *, limit: int, too_large: Callable[[], ServiceError]) -> bytes:
    """The request body, refused (`too_large()`) as soon as it is known to pass `limit` bytes: from
    Content-Length before reading anything, otherwise while streaming, so memory never holds more."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large()
    return bytes(body)


async def read_form(request: Request, body: bytes) -> FormData:
    """Parse a body already read by read_body as a form (urlencoded or multipart), as Starlette would."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return await Request(request.scope, replay).form()


def error_response(request: Request, error: ServiceError) -> Response:
    if not wants_page(request):
        return JSONResponse(
            error.as_dict(), status_code=error.status_code, headers={**PRIVATE_PAGE_HEADERS, **error.headers}
        )
    return templates.TemplateResponse(
        request,
        "error.html",
        {
            "title": TITLES.get(error.code, "Something went wrong"),
            "message": error.message,
            "code": error.code,
            "status": error.status_code,
        },
        status_code=error.status_code,
        headers={**PRIVATE_PAGE_HEADERS, **error.headers},
    )
