"""Facebook: Login for the merchant's Pages, and the deauthorize and data-deletion callbacks. What a
login's Pages become is routes/pages.py's part."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from service import keys, outcomes, revocations
from service.errors import (
    AccessDenied,
    InvalidCallback,
    InvalidSignedRequest,
    InvalidState,
    NotFound,
)
from service.models import utcnow
from service.oauth_state import begin_flow, finish_flow
from service.pending_grants import GrantPage, PendingGrant
from service.providers import facebook
from service.routes import pages as pages_routes
from service.routes.common import (
    PRIVATE_PAGE_HEADERS,
    browser_nonce,
    client_ip,
    facebook_credentials,
    graph_for,
    read_body,
    read_form,
    services,
    session_account,
    templates,
    wants_json,
)
from service.routes.forms import WARNING, refused
from service.settings import Settings

MAX_FORM_BYTES = 16 * 1024
SINGLE_PARAMETERS = ("code", "state", "error", "error_reason")


async def login(request: Request) -> Response:
    app = services(request)
    app_id, _secret, redirect_uri = facebook_credentials(app.settings)
    scopes = list(app.settings.facebook_scopes)
    state = await begin_flow(
        app.store,
        provider=keys.FACEBOOK,
        browser_nonce=browser_nonce(request, create=True) or "",
        scopes=scopes,
        redirect_uri=redirect_uri,
        account_uuid=session_account(request),
        client_ip=client_ip(request),
    )
    url = facebook.dialog_url(
        dialog_base=app.settings.facebook_dialog_base_url,
        version=app.settings.facebook_graph_version,
        client_id=app_id,
        redirect_uri=redirect_uri,
        state=state,
        scopes=scopes,
    )
    return RedirectResponse(url, status_code=302)


def _single(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidCallback(f"The callback has the parameter {name!r} more than once.")
    return values[0] if values else None


async def callback(request: Request) -> Response:
    app = services(request)
    graph = graph_for(request)
    params = {name: _single(request, name) for name in SINGLE_PARAMETERS}
    nonce = browser_nonce(request, create=False)
    if params["error"] is not None:
        # The merchant pressed Cancel: a normal outcome. The state is spent if it is ours; nothing is stored.
        if params["state"]:
            # A bad state on a cancel changes nothing either way.
            with contextlib.suppress(InvalidState):
                await finish_flow(app.store, state=params["state"], provider=keys.FACEBOOK, browser_nonce=nonce)
        cancelled = AccessDenied("You cancelled on Facebook, so no Page was connected. You can try again at any time.")
        return refused(request, cancelled, kind=WARNING)
    if not params["code"]:
        raise InvalidCallback("The callback has no code parameter.")
    flow = await finish_flow(app.store, state=params["state"], provider=keys.FACEBOOK, browser_nonce=nonce)
    now = utcnow()
    short = await graph.exchange_code(code=params["code"], redirect_uri=flow.redirect_uri, now=now)
    user_token = await graph.long_lived(short.access_token, now=now)
    user = await graph.me(user_token.access_token)
    pages = await graph.pages(user_token.access_token)
    grant = PendingGrant(
        user_id=user["id"],
        user_name=user["name"] or None,
        user_token=user_token.access_token,
        token_expires_at=user_token.expires_at,
        scopes=",".join(flow.scopes),
        account_uuid=flow.account_uuid or session_account(request),
        pages=[GrantPage(page.id, page.name, page.category, page.tasks) for page in pages],
    )
    if pages_routes.needs_choice(grant):
        # The account rule is asked before the merchant ticks anything: a login it refuses is refused now.
        preview = await app.store.preview_facebook(
            user_id=grant.user_id, page_ids=[page.id for page in pages], session_account=grant.account_uuid
        )
        if preview.account is None:
            return refused(request, pages_routes.user_elsewhere())
        return RedirectResponse(await pages_routes.hold_for_choice(request, grant), status_code=303)
    return await pages_routes.connect_grant(request, grant, pages)


async def _signed_request(request: Request) -> dict:
    app = services(request)
    _app_id, app_secret, _redirect_uri = facebook_credentials(app.settings)
    body = await read_body(request, limit=MAX_FORM_BYTES, too_large=_too_large)
    form = await read_form(request, body)
    values = form.getlist("signed_request")
    if len(values) != 1 or not isinstance(values[0], str):
        raise InvalidSignedRequest("The request must carry exactly one signed_request form field.")
    return facebook.parse_signed_request(values[0], app_secret=app_secret)


def _too_large() -> InvalidSignedRequest:
    return InvalidSignedRequest("The request is larger than any signed_request.", status_code=413)


def _user_id(payload: dict, name: str = "user_id") -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    text = str(value)
    if not text.isascii() or not text.isdigit() or len(text) > 32:
        raise InvalidSignedRequest(f"The signed_request's {name} is not a Facebook id.")
    return text


def _checked(request: Request, payload: dict) -> str:
    """Refuse a signed_request issued outside the window; return its digest (what a replay repeats)."""
    facebook.check_issued_at(payload, now=time.time())
    secret = str(services(request).settings.state_token_secret).encode()
    return facebook.payload_digest(payload, key=hmac.new(secret, b"salesbot signed_request", hashlib.sha256).digest())


async def deauthorize(request: Request) -> Response:
    app = services(request)
    payload = await _signed_request(request)
    user_id, profile_id = _user_id(payload), _user_id(payload, "profile_id")
    if user_id is None and profile_id is None:
        raise InvalidSignedRequest("The signed_request names no user_id or profile_id.")
    digest = _checked(request, payload)
    if user_id is not None:
        deleted = await revocations.deauthorize_user(app.store, user_id, request_digest=digest)
    else:
        deleted = await revocations.remove_page(app.store, str(profile_id), request_digest=digest)
    who = {"user": user_id} if user_id is not None else {"page": profile_id}
    outcomes.webhook("deauthorized", **who, status="duplicate" if deleted is None else "ok", deleted=deleted or 0)
    if deleted is None:
        return JSONResponse({"status": "duplicate", "deleted": 0})
    return JSONResponse({"status": "ok", "deleted": deleted})


def _public_base(request: Request, settings: Settings) -> str:
    # Meta shows this URL to the user: build it from our configured redirect URI, not from the
    # request's Host header, which the caller controls.
    if settings.facebook_redirect_uri:
        parts = urlsplit(settings.facebook_redirect_uri)
        return f"{parts.scheme}://{parts.netloc}"
    return str(request.base_url).rstrip("/")


async def data_deletion(request: Request) -> Response:
    app = services(request)
    payload = await _signed_request(request)
    user_id = _user_id(payload)
    if user_id is None:
        raise InvalidSignedRequest("The signed_request names no user_id.")
    code, deleted = await revocations.delete_user_data(app.store, user_id, request_digest=_checked(request, payload))
    outcomes.webhook("data_deleted", user=user_id, deleted=deleted)
    url = f"{_public_base(request, app.settings)}/facebook/data-deletion/{code}"
    return JSONResponse({"url": url, "confirmation_code": code})


async def deletion_status(request: Request) -> Response:
    app = services(request)
    row = await revocations.deletion_request(app.store, request.path_params["code"])
    if row is None:
        raise NotFound("No data-deletion request has this confirmation code.")
    view = {
        "code": row["confirmation_code"],
        "status": row["status"],
        "deleted_rows": row["deleted_rows"],
        "requested_at": row["requested_at"].isoformat(timespec="seconds"),
    }
    if wants_json(request):
        body = {"confirmation_code": view["code"], **{k: v for k, v in view.items() if k != "code"}}
        return JSONResponse(body, headers=PRIVATE_PAGE_HEADERS)
    return templates.TemplateResponse(request, "deletion.html", view, headers=PRIVATE_PAGE_HEADERS)


routes = [
    Route("/facebook/login", login, methods=["GET"]),
    Route("/facebook/callback", callback, methods=["GET"]),
    Route("/facebook/deauthorize", deauthorize, methods=["POST"]),
    Route("/facebook/data-deletion", data_deletion, methods=["POST"]),
    Route("/facebook/data-deletion/{code}", deletion_status, methods=["GET"]),
]
