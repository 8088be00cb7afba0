"""The merchant's connections page (HTML, or JSON on request), logging out, and the health check.

It shows names, not ids ("Acme Shoes (Page 101)", "connected by Ana Example"), the messages the last
steps left (service/routes/forms.py), what needs reconnecting, and the account's last ten events in
words (service/events/words.py). Never a token.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from service import keys, oauth_state, pending_grants
from service.events.words import described
from service.models import utcnow
from service.routes.common import (
    PRIVATE_PAGE_HEADERS,
    browser_nonce,
    services,
    session_account,
    templates,
    wants_json,
)
from service.routes.forms import checked_form, csrf_token, take_messages
from service.vault import TokenRecord

# A Shopify refresh token this close to its end is flagged: after it, only a new install gives a token.
REFRESH_TOKEN_WARNING = timedelta(days=7)


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def _tasks(record: TokenRecord) -> list[str]:
    return [task for task in (record.tasks or "").split(",") if task]


def attention(record: TokenRecord, now: datetime) -> str | None:
    """Why this token needs the merchant to connect again, or None.

    A token is dead when its expiry has passed and nothing can refresh it: that is how `tokens check
    --online` and the bot's clients mark a token the provider refused (expires_at set to the time they
    found out), and how a short-lived token ends. A Shopify token that can be refreshed lives as long
    as its refresh token, which is flagged a week before its end."""
    if record.refreshable:
        end = record.refresh_expires_at
        if end is not None and end <= now:
            return "Its refresh token has expired, so Shopify will not give a new access token: reconnect the store."
        if end is not None and end - now < REFRESH_TOKEN_WARNING:
            return f"Its refresh token ends on {end:%Y-%m-%d %H:%M} UTC: reconnect the store before then."
        return None
    if record.expires_at is not None and record.expires_at <= now:
        if record.provider == keys.SHOPIFY:
            return "Shopify no longer accepts its token: reconnect the store."
        return "Facebook no longer accepts its Page token: connect Facebook again."
    return None


def describe_account(account: str | None, records: list[TokenRecord], now: datetime | None = None) -> dict:
    """What the page shows: names, scopes and expiry times of each connection, what needs
    reconnecting (`needs`), never a value."""
    now = now or utcnow()
    shops, pages, users = [], [], []
    for record in records:
        info = keys.describe_key(record.key)
        if info is None or info.is_uuid:
            continue
        reason = attention(record, now)
        if record.key.startswith(keys.SHOPIFY_TOKEN_PREFIX):
            shops.append(
                {
                    "shop": record.subject or info.subject,
                    "name": record.name,
                    "scopes": record.scopes,
                    "expires_at": _when(record.expires_at),
                    "refresh_expires_at": _when(record.refresh_expires_at),
                    "needs_reconnecting": reason is not None,
                    "reason": reason,
                }
            )
        elif record.key.startswith(keys.PAGE_TOKEN_PREFIX):
            pages.append(
                {
                    "page_id": info.subject,
                    "name": record.name,
                    "category": record.category,
                    "tasks": _tasks(record),
                    "granted_by": record.granted_by,
                    "granted_by_name": None,  # filled below, from the user's own row
                    "scopes": record.scopes,
                    "expires_at": _when(record.expires_at),
                    "needs_reconnecting": reason is not None,
                    "reason": reason,
                }
            )
        elif record.key.startswith(keys.FACEBOOK_USER_TOKEN_PREFIX):
            users.append(
                {"facebook_user_id": info.subject, "name": record.name, "expires_at": _when(record.expires_at)}
            )
    names = {user["facebook_user_id"]: user["name"] for user in users}
    for page in pages:
        page["granted_by_name"] = names.get(page["granted_by"])
    needs = [f"reconnect_shopify:{shop['shop']}" for shop in shops if shop["needs_reconnecting"]]
    needs += [f"reconnect_facebook:{page['page_id']}" for page in pages if page["needs_reconnecting"]]
    missing = [name for name, have in (("shopify", shops), ("facebook", pages)) if not have]
    return {
        "account": account,
        "shops": shops,
        "pages": pages,
        "facebook_users": users,
        "missing": missing,
        "needs": needs,
    }


async def status_page(request: Request) -> Response:
    app = services(request)
    account = session_account(request)
    records = await app.store.list_tokens(account_uuid=account) if account else []
    activity = [described(event) for event in await app.store.event_log.recent(account)] if account else []
    view = {**describe_account(account, records), "recent_activity": activity, "messages": take_messages(request)}
    if wants_json(request):
        # A script that wants to POST a form (disconnect, log out) takes the token from here.
        return JSONResponse({**view, "csrf_token": csrf_token(request)}, headers=PRIVATE_PAGE_HEADERS)
    # Only an account's page has forms that POST: an anonymous view makes no session (crawlers make no rows).
    context = {**view, "demo": app.demo is not None, "csrf_token": csrf_token(request) if account else None}
    return templates.TemplateResponse(request, "status.html", context, headers=PRIVATE_PAGE_HEADERS)


async def logout(request: Request) -> Response:
    """End this browser's session on the server (service/sessions.py deletes it: a copy of the cookie opens
    nothing afterwards), with its unfinished sign-ins and the Facebook grant it left waiting."""
    await checked_form(request)
    nonce = browser_nonce(request, create=False)
    if nonce is not None:
        store = services(request).store
        await pending_grants.forget_browser(store, nonce)
        await oauth_state.forget_browser(store, nonce)
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
