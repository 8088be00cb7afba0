"""Facebook: Login for the merchant's Pages, and the deauthorize and data-deletion callbacks."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from service import keys, revocations
from service.errors import (
    AccessDenied,
    FacebookUserOwnedElsewhere,
    InvalidCallback,
    InvalidSignedRequest,
    InvalidState,
    NotFound,
    PageOwnedElsewhere,
)
from service.models import utcnow
from service.oauth_state import begin_flow, finish_flow
from service.providers import facebook
from service.routes.common import (
    PRIVATE_PAGE_HEADERS,
    browser_nonce,
    client_ip,
    read_body,
    read_form,
    require_settings,
    services,
    session_account,
    templates,
    wants_json,
)
from service.settings import Settings
from service.vault import TokenWrite

MAX_FORM_BYTES = 16 * 1024
SINGLE_PARAMETERS = ("code", "state", "error", "error_reason")


def _credentials(settings: Settings) -> tuple[str, str, str]:
    require_settings(
        "Facebook",
        FACEBOOK_APP_ID=settings.facebook_app_id,
        FACEBOOK_APP_SECRET=settings.facebook_app_secret,
        FACEBOOK_REDIRECT_URI=settings.facebook_redirect_uri,
    )
    return settings.facebook_app_id, str(settings.facebook_app_secret), settings.facebook_redirect_uri  # type: ignore[return-value]


def graph_for(request: Request) -> facebook.Graph:
    app = services(request)
    app_id, app_secret, _redirect_uri = _credentials(app.settings)
    return facebook.Graph(
        app.http,
        graph_base=app.settings.facebook_graph_base_url,
        version=app.settings.facebook_graph_version,
        app_id=app_id,
        app_secret=app_secret,
    )


async def login(request: Request) -> Response:
    app = services(request)
    app_id, _secret, redirect_uri = _credentials(app.settings)
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
        raise AccessDenied("You cancelled on Facebook, so no Page was connected. You can try again at any time.")
    if not params["code"]:
        raise InvalidCallback("The callback has no code parameter.")
    flow = await finish_flow(app.store, state=params["state"], provider=keys.FACEBOOK, browser_nonce=nonce)
    now = utcnow()
    short = await graph.exchange_code(code=params["code"], redirect_uri=flow.redirect_uri, now=now)
    user_token = await graph.long_lived(short.access_token, now=now)
    user = await graph.me(user_token.access_token)
    pages = await graph.pages(user_token.access_token)
    user_id = user["id"]
    scopes = ",".join(flow.scopes)
    user_write = TokenWrite(
        keys.facebook_user_token_key(user_id),
        user_token.access_token,
        "token",
        {"provider": keys.FACEBOOK, "subject": user_id, "scopes": scopes, "expires_at": user_token.expires_at},
    )
    page_writes = [
        (
            page.id,
            TokenWrite(
                keys.page_token_key(page.id),
                page.access_token,
                "token",
                # Page tokens from a long-lived user token do not expire by time (they die with the grant).
                {
                    "provider": keys.FACEBOOK,
                    "subject": page.id,
                    "granted_by": user_id,
                    "scopes": scopes,
                    "expires_at": None,
                },
            ),
        )
        for page in pages
    ]
    joined = await app.store.connect_facebook(
        user_id=user_id,
        user_token=user_write,
        pages=page_writes,
        session_account=flow.account_uuid or session_account(request),
    )
    if joined.account is None:
        raise FacebookUserOwnedElsewhere(
            "This Facebook login is already connected to another account, so nothing was changed and this browser "
            "stays in its own account. To open that account, log out first, then connect Facebook again."
        )
    request.session["account"] = joined.account
    if joined.refused_pages:
        raise _pages_elsewhere([page for page in pages if page.id in joined.refused_pages], granted=len(pages))
    return RedirectResponse("/", status_code=303)


def _pages_elsewhere(refused: list[facebook.Page], *, granted: int) -> PageOwnedElsewhere:
    names = ", ".join(f"{page.name[:80]} ({page.id})" if page.name else page.id for page in refused)
    which = f"The Facebook Page {names} is" if len(refused) == 1 else f"The Facebook Pages {names} are"
    others = " The other Pages of your grant were connected." if granted > len(refused) else ""
    return PageOwnedElsewhere(
        f"{which} already connected to another account by a different Facebook user, so nothing was changed "
        f"for {'it' if len(refused) == 1 else 'them'}.{others} If a Page is yours, log out, connect the Shopify "
        "store of its account, then connect Facebook again.",
        pages=[page.id for page in refused],
    )


async def _signed_request(request: Request) -> dict:
    app = services(request)
    _app_id, app_secret, _redirect_uri = _credentials(app.settings)
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
    code, _deleted = await revocations.delete_user_data(app.store, user_id, request_digest=_checked(request, payload))
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
