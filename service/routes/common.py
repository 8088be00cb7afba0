"""What every route shares: the app's parts, the browser session, and turning errors into responses."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.templating import Jinja2Templates

from service.errors import NotConfigured, ServiceError
from service.refresh import ShopifyTokens
from service.settings import Settings
from service.store import TokenStore

templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))


def _when(iso: str | None, absent: str) -> str:
    # The page shows "2026-11-25 23:20 UTC"; JSON keeps the ISO form for scripts.
    return absent if iso is None else iso[:16].replace("T", " ") + " UTC"


templates.env.filters["when"] = _when

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
}


@dataclass
class Services:
    """The parts routes need, built once in the app's lifespan."""

    settings: Settings
    store: TokenStore
    http: httpx.AsyncClient
    shopify_tokens: ShopifyTokens
    demo: Any = None  # the Sandbox, in demo mode


def require_settings(provider: str, **values: object) -> None:
    """Refuse a route whose settings this deployment did not give, naming each missing variable."""
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise NotConfigured(f"{provider} is not configured: set {', '.join(missing)}.")


def services(request: Request) -> Services:
    return request.app.state.services


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def browser_nonce(request: Request, *, create: bool) -> str | None:
    """The random value that identifies this browser in its signed session cookie."""
    nonce = request.session.get("browser")
    if nonce is None and create:
        nonce = request.session["browser"] = secrets.token_urlsafe(24)
    return nonce


def session_account(request: Request) -> str | None:
    account = request.session.get("account")
    return account if isinstance(account, str) else None


def error_response(request: Request, error: ServiceError) -> Response:
    if wants_json(request) or request.method != "GET":
        return JSONResponse(error.as_dict(), status_code=error.status_code)
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
    )
