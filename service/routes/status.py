"""The merchant's connections page (HTML, or JSON on request), logging out, and the health check.

It says first where the bot stands, in words ("Your bot answers on Acme Shoes with products from Acme"),
then names, not ids ("Acme Shoes (Page 101)", "connected by Ana Example"), each connection's health as
vault/health.py decides it, the messages the last steps left (service/routes/forms.py), what the
providers removed since the page was last seen, and the account's last ten events in words
(service/events/words.py); ids, scopes and expiry times under "Details". Never a token.
"""

from __future__ import annotations

from datetime import datetime

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
from service.routes.forms import WARNING, checked_form, csrf_token, take_messages
from service.vault import Removal, TokenRecord, health

# Set by the Shopify login, taken off by its callback: still there, the merchant left Shopify's consent
# page without installing (Shopify sends nobody back on a cancel: docs/providers.md, "Declining").
PENDING_INSTALL = "shopify_install"


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def _tasks(record: TokenRecord) -> list[str]:
    return [task for task in (record.tasks or "").split(",") if task]


def _health(found: health.Health, label: str) -> dict:
    return {
        **found.as_dict(),
        "needs_reconnecting": found.needs_merchant,  # the button that mends it is shown
        "clause": found.clause,
        "reason_text": found.sentence(label),
    }


def describe_account(account: str | None, records: list[TokenRecord], now: datetime | None = None) -> dict:
    """What the page shows: names, each connection's health in words, the details (scopes, expiry times),
    what needs reconnecting (`needs`) and the first line (`headline`); never a value."""
    now = now or utcnow()
    shops, pages, users = [], [], []
    for record in sorted(records, key=lambda record: (record.created_at or now, record.key)):
        info = keys.describe_key(record.key)
        if info is None or info.is_uuid:
            continue
        found = health.of_record(record, now)
        if record.key.startswith(keys.SHOPIFY_TOKEN_PREFIX):
            domain = record.subject or info.subject
            shops.append(
                {
                    "shop": domain,
                    "name": record.name,
                    "label": record.name or domain,
                    "scopes": record.scopes,
                    "expires_at": _when(record.expires_at),
                    "refresh_expires_at": _when(record.refresh_expires_at),
                    **_health(found, record.name or domain),
                }
            )
        elif record.key.startswith(keys.PAGE_TOKEN_PREFIX):
            label = record.name or f"Page {info.subject}"
            pages.append(
                {
                    "page_id": info.subject,
                    "name": record.name,
                    "label": label,
                    "category": record.category,
                    "tasks": _tasks(record),
                    "granted_by": record.granted_by,
                    "granted_by_name": None,  # filled below, from the user's own row
                    "scopes": record.scopes,
                    "expires_at": _when(record.expires_at),
                    "checked_at": _when(record.checked_at),
                    **_health(found, label),
                }
            )
        elif record.key.startswith(keys.FACEBOOK_USER_TOKEN_PREFIX):
            label = f"{record.name or 'Facebook user ' + info.subject}'s Facebook login"
            users.append(
                {
                    "facebook_user_id": info.subject,
                    "name": record.name,
                    "expires_at": _when(record.expires_at),
                    **_health(found, label),
                }
            )
    names = {user["facebook_user_id"]: user["name"] for user in users}
    for page in pages:
        page["granted_by_name"] = names.get(page["granted_by"])
    needs = [f"reconnect_shopify:{shop['shop']}" for shop in shops if shop["needs_reconnecting"]]
    needs += [f"reconnect_facebook:{page['page_id']}" for page in pages if page["needs_reconnecting"]]
    missing = [name for name, have in (("shopify", shops), ("facebook", pages)) if not have]
    return {
        "account": account,
        "headline": headline(shops, pages),
        "shops": shops,
        "pages": pages,
        "facebook_users": users,
        "missing": missing,
        "needs": needs,
    }


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def headline(shops: list[dict], pages: list[dict]) -> str:
    """Where the bot stands, in words: what needs reconnecting and why, where the bot answers and with
    whose products, what ends soon. `shops` in the order they were connected (the bot sells from the first
    that works, as PageConnection.shop names the first connected)."""
    if not shops and not pages:
        return "Connect a Shopify store and a Facebook Page so the bot can answer shoppers."
    broken = [item for item in (*shops, *pages) if item["health"] == health.NEEDS_RECONNECT]
    said = []
    if len(broken) == 1:
        said.append(broken[0]["reason_text"])
    elif broken:
        clauses = "; ".join(f"{item['label']} ({item['clause']})" for item in broken)
        said.append(f"{len(broken)} connections need reconnecting: {clauses}.")
    answering = [page["label"] for page in pages if page["health"] != health.NEEDS_RECONNECT]
    selling = next((shop["label"] for shop in shops if shop["health"] != health.NEEDS_RECONNECT), None)
    if answering and selling:
        said.append(f"Your bot answers on {_listed(answering)} with products from {selling}.")
    elif answering:
        if shops:
            said.append(f"Until then your bot answers on {_listed(answering)} without products.")
        else:
            said.append(f"Connect a Shopify store so the bot has products to sell on {_listed(answering)}.")
    elif pages:
        said.append("Until then your bot cannot answer shoppers.")
    else:
        said.append("Connect a Facebook Page so the bot can answer shoppers.")
    said += [item["reason_text"] for item in (*shops, *pages) if item["health"] == health.EXPIRING_SOON]
    return " ".join(said)


def _removal_message(removal: Removal) -> dict:
    label = removal.name or (removal.subject if removal.provider == keys.SHOPIFY else f"Page {removal.subject}")
    return {"kind": WARNING, "code": removal.reason, "text": removal.health.sentence(label)}


async def status_page(request: Request) -> Response:
    app = services(request)
    account = session_account(request)
    records = await app.store.list_tokens(account_uuid=account) if account else []
    messages = take_messages(request)
    pending = request.session.pop(PENDING_INSTALL, None)
    if isinstance(pending, str):
        messages.append(
            {
                "kind": WARNING,
                "code": "install_not_finished",
                "text": f"You did not finish installing the app on {pending}, so nothing changed there. "
                "Connect the store again when you are ready.",
            }
        )
    removed = await app.store.verdicts.take_removals(account) if account else []
    messages += [_removal_message(removal) for removal in removed]
    activity = [described(event) for event in await app.store.event_log.recent(account)] if account else []
    view = {**describe_account(account, records), "recent_activity": activity, "messages": messages}
    if wants_json(request):
        # A script that wants to POST a form (disconnect, log out) takes the token from here.
        removals = [
            {"provider": r.provider, "subject": r.subject, "name": r.name, **r.health.as_dict()} for r in removed
        ]
        view = {**view, "removed": removals, "csrf_token": csrf_token(request)}
        return JSONResponse(view, headers=PRIVATE_PAGE_HEADERS)
    # Only an account's page has forms that POST: an anonymous view makes no session (crawlers make no rows).
    context = {**view, "demo": app.demo, "csrf_token": csrf_token(request) if account else None}
    if app.demo is not None:  # the demo's HTTP API keys (service/demo.py), for docs/api.md's examples
        context["demo_api_keys"] = getattr(request.app.state, "demo_api_keys", None)
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
