"""Which Pages of a Facebook login the bot answers for (DESIGN.md, "The connections page").

A login that gives more than one Page, or a Page the merchant cannot message for, waits as a pending
grant (service/pending_grants.py) while the merchant ticks Pages on a form: all that can be chosen
are ticked, a Page without the MESSAGING task is shown but cannot be ticked, with the reason. The
choice re-reads the Page list from Facebook with the user token and stores only the ticked Pages,
through the same account rule as every connect (vault/linking.py). A login with one Page it can
message for is stored at once.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import keys, outcomes, pending_grants
from service.errors import FacebookUserOwnedElsewhere, InvalidChoice, InvalidState, PageOwnedElsewhere, PagesChanged
from service.pending_grants import MESSAGING, PendingGrant
from service.providers import facebook
from service.routes.common import (
    PRIVATE_PAGE_HEADERS,
    browser_nonce,
    graph_for,
    services,
    session_account,
    templates,
    wants_json,
)
from service.routes.forms import WARNING, back_to_status, checked_form, csrf_token, flash, refused
from service.vault import rows

GRANT = "facebook_grant"  # the session's key for the id of its pending grant
NAMED_PAGES = 5  # a message names this many Pages, then counts the rest
NO_MESSAGING = (
    "Your role on this Page does not include messaging (the MESSAGING task), so the bot could not answer for "
    "it. A Page admin can give you that task; then connect Facebook again."
)


def needs_choice(grant: PendingGrant) -> bool:
    return len(grant.pages) > 1 or any(not page.can_message for page in grant.pages)


async def hold_for_choice(request: Request, grant: PendingGrant) -> str:
    """Keep the grant until the merchant chooses; the session remembers which one is theirs."""
    nonce = browser_nonce(request, create=True) or ""
    request.session[GRANT] = await pending_grants.hold(services(request).store, browser_nonce=nonce, grant=grant)
    return "/facebook/pages"


async def connect_grant(request: Request, grant: PendingGrant, pages: list[facebook.Page]) -> Response:
    """Store the user token and these Pages (names beside them) in the account the rule allows."""
    app = services(request)
    user_write = rows.facebook_user(
        grant.user_id, grant.user_token, scopes=grant.scopes, expires_at=grant.token_expires_at, name=grant.user_name
    )
    page_writes = [(page.id, rows.facebook_page(page, granted_by=grant.user_id, scopes=grant.scopes)) for page in pages]
    joined = await app.store.connect_facebook(
        user_id=grant.user_id,
        user_token=user_write,
        pages=page_writes,
        session_account=grant.account_uuid or session_account(request),
    )
    if joined.account is None:
        return refused(request, user_elsewhere())
    request.session["account"] = joined.account
    connected = [page for page in pages if page.id not in joined.refused_pages]
    outcomes.connected(keys.FACEBOOK, user=grant.user_id, pages=len(connected), account=joined.account)
    message = _connected(connected, grant)
    if joined.refused_pages:
        flash(request, message)
        return refused(request, _pages_elsewhere([page for page in pages if page.id in joined.refused_pages], pages))
    if wants_json(request):
        body = {
            "status": "connected",
            "account": joined.account,
            "pages": [{"page_id": page.id, "name": page.name or None} for page in connected],
            "message": message,
        }
        return JSONResponse(body, headers=PRIVATE_PAGE_HEADERS)
    return back_to_status(request, message)


def user_elsewhere() -> FacebookUserOwnedElsewhere:
    return FacebookUserOwnedElsewhere(
        "This Facebook login is already connected to another account, so nothing was changed and this "
        "browser stays in its own account. To open that account, log out first, then connect Facebook again."
    )


def _connected(pages: list[facebook.Page], grant: PendingGrant) -> str:
    if not pages:
        who = f" as {grant.user_name}" if grant.user_name else ""
        return f"Connected Facebook{who}, but no Page: the bot has no Page to answer for yet."
    names = ", ".join(page.name or f"Page {page.id}" for page in pages[:NAMED_PAGES])
    more = f" and {len(pages) - NAMED_PAGES} more" if len(pages) > NAMED_PAGES else ""
    return f"Connected {names}" if len(pages) == 1 else f"Connected {len(pages)} Pages: {names}{more}"


def _pages_elsewhere(refused_pages: list[facebook.Page], offered: list[facebook.Page]) -> PageOwnedElsewhere:
    names = ", ".join(f"{page.name[:80]} ({page.id})" if page.name else page.id for page in refused_pages)
    which = f"The Facebook Page {names} is" if len(refused_pages) == 1 else f"The Facebook Pages {names} are"
    others = " The other Pages of your grant were connected." if len(offered) > len(refused_pages) else ""
    one = len(refused_pages) == 1
    return PageOwnedElsewhere(
        f"{which} already connected to another account by a different Facebook user, so nothing was changed "
        f"for {'it' if one else 'them'}.{others} If a Page is yours, log out, connect the Shopify "
        "store of its account, then connect Facebook again.",
        pages=[page.id for page in refused_pages],
    )


async def _pending(request: Request) -> PendingGrant:
    return await pending_grants.load(
        services(request).store,
        grant_id=request.session.get(GRANT),
        browser_nonce=browser_nonce(request, create=False),
    )


async def choose_form(request: Request) -> Response:
    grant = await _pending(request)
    account = session_account(request) or grant.account_uuid
    records = await services(request).store.list_tokens(account_uuid=account) if account else []
    connected = {record.subject for record in records if record.key.startswith(keys.PAGE_TOKEN_PREFIX)}
    pages = [
        {
            "page_id": page.id,
            "name": page.name,
            "category": page.category,
            "tasks": page.tasks,
            "can_choose": page.can_message,
            "reason": None if page.can_message else NO_MESSAGING,
            "connected": page.id in connected,
        }
        for page in grant.pages
    ]
    view = {"facebook_user": {"id": grant.user_id, "name": grant.user_name}, "pages": pages}
    if wants_json(request):
        return JSONResponse({**view, "csrf_token": csrf_token(request)}, headers=PRIVATE_PAGE_HEADERS)
    return templates.TemplateResponse(
        request, "choose_pages.html", {**view, "csrf_token": csrf_token(request)}, headers=PRIVATE_PAGE_HEADERS
    )


async def choose(request: Request) -> Response:
    app = services(request)
    form = await checked_form(request)
    grant = await _pending(request)
    grant_id = str(request.session.get(GRANT))
    if form.get("action") == "cancel":
        await _release(request, grant_id)
        return _finished(request, "cancelled", "No Page was connected: you cancelled the choice.")
    chosen = [value for value in form.getlist("page") if isinstance(value, str)]
    offered = {page.id: page for page in grant.pages}
    wrong = [page_id for page_id in chosen if page_id not in offered or not offered[page_id].can_message]
    if wrong or len(set(chosen)) != len(chosen):
        raise InvalidChoice(
            "The form names a Page that is not one of this login's Pages you can message for, or one Page twice. "
            "Nothing was stored; choose again."
        )
    if not chosen:
        await _release(request, grant_id)
        return _finished(request, "nothing_chosen", "No Page was connected: none was ticked.")
    # The tokens come from Facebook now, for the ticked Pages only: the others' are never written anywhere.
    fresh = {page.id: page for page in await graph_for(request).pages(grant.user_token)}
    gone = [offered[page_id] for page_id in chosen if MESSAGING not in getattr(fresh.get(page_id), "tasks", [])]
    if gone:
        await _release(request, grant_id)
        names = ", ".join(page.name or page.id for page in gone)
        raise PagesChanged(
            f"Facebook no longer lists {names} for you with messaging, so nothing was stored: connect Facebook again."
        )
    if not await pending_grants.release(app.store, grant_id):
        raise InvalidState("This choice of Pages was already made; connect Facebook again to change it.")
    request.session.pop(GRANT, None)
    return await connect_grant(request, grant, [fresh[page_id] for page_id in offered if page_id in chosen])


async def _release(request: Request, grant_id: str) -> None:
    await pending_grants.release(services(request).store, grant_id)
    request.session.pop(GRANT, None)


def _finished(request: Request, status: str, text: str) -> Response:
    if wants_json(request):
        return JSONResponse({"status": status, "message": text}, headers=PRIVATE_PAGE_HEADERS)
    return back_to_status(request, text, kind=WARNING)


routes = [
    Route("/facebook/pages", choose_form, methods=["GET"]),
    Route("/facebook/pages", choose, methods=["POST"]),
]
