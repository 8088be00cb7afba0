"""The merchant's status page (HTML, or JSON on request), logging out, and the health check. Never
shows a token."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from service import keys
from service.routes.common import PRIVATE_PAGE_HEADERS, services, session_account, templates, wants_json
from service.vault import TokenRecord


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def describe_account(account: str | None, records: list[TokenRecord]) -> dict:
    """What the page shows: names, scopes and expiry times of each connection, never a value."""
    shops, pages, users = [], [], []
    for record in records:
        info = keys.describe_key(record.key)
        if info is None or info.is_uuid:
            continue
        if record.key.startswith(keys.SHOPIFY_TOKEN_PREFIX):
            shops.append(
                {
                    "shop": record.subject or info.subject,
                    "scopes": record.scopes,
                    "expires_at": _when(record.expires_at),
                    "refresh_expires_at": _when(record.refresh_expires_at),
                }
            )
        elif record.key.startswith(keys.PAGE_TOKEN_PREFIX):
            pages.append(
                {
                    "page_id": info.subject,
                    "granted_by": record.granted_by,
                    "scopes": record.scopes,
                    "expires_at": _when(record.expires_at),
                }
            )
        elif record.key.startswith(keys.FACEBOOK_USER_TOKEN_PREFIX):
            users.append({"facebook_user_id": info.subject, "expires_at": _when(record.expires_at)})
    missing = [name for name, have in (("shopify", shops), ("facebook", pages)) if not have]
    return {"account": account, "shops": shops, "pages": pages, "facebook_users": users, "missing": missing}


async def status_page(request: Request) -> Response:
    app = services(request)
    account = session_account(request)
    records = await app.store.list_tokens(account_uuid=account) if account else []
    view = describe_account(account, records)
    if wants_json(request):
        return JSONResponse(view, headers=PRIVATE_PAGE_HEADERS)
    return templates.TemplateResponse(
        request, "status.html", {**view, "demo": app.demo is not None}, headers=PRIVATE_PAGE_HEADERS
    )


async def logout(request: Request) -> Response:
    """Forget this browser's account and pending sign-ins (its session cookie is cleared)."""
    request.session.clear()
    if wants_json(request):
        return JSONResponse({"status": "logged_out"}, headers=PRIVATE_PAGE_HEADERS)
    return RedirectResponse("/", status_code=303)


async def healthz(request: Request) -> Response:
    await services(request).store.ping()  # a database that does not answer is a 503 (service/app.py)
    return JSONResponse({"status": "ok"})


routes = [
    Route("/", status_page, methods=["GET"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
]
