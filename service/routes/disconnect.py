"""Disconnect buttons: a page that asks to confirm (GET), then the form that does it (POST, with this
session's CSRF token). What disconnecting does is service/disconnect.py's part."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import disconnect
from service.errors import NotFound
from service.providers import shopify
from service.providers.http import numeric_id
from service.routes.common import (
    PRIVATE_PAGE_HEADERS,
    graph_for,
    own_account,
    segment,
    services,
    templates,
    wants_json,
)
from service.routes.forms import OK, WARNING, back_to_status, checked_form, csrf_token


def _account(request: Request) -> str:
    return own_account(request, to="disconnect")


def _page_id(request: Request) -> str:
    page_id = request.path_params["page_id"]
    if not numeric_id(page_id):
        raise NotFound("This account has no Page like that.")
    return page_id


def _confirm(request: Request, label: str, action: str, consequences: list[str]) -> Response:
    context = {"label": label, "action": action, "consequences": consequences, "csrf_token": csrf_token(request)}
    return templates.TemplateResponse(request, "confirm.html", context, headers=PRIVATE_PAGE_HEADERS)


def _finished(request: Request, outcome: disconnect.Disconnected) -> Response:
    if wants_json(request):
        body = {"status": "disconnected", "name": outcome.name, "revocation": outcome.revocation}
        return JSONResponse({**body, "message": outcome.message}, headers=PRIVATE_PAGE_HEADERS)
    return back_to_status(request, outcome.message, kind=OK if outcome.provider_told else WARNING)


async def confirm_shop(request: Request) -> Response:
    domain = shopify.normalize_shop(request.path_params["shop"])
    record = await disconnect.shop_to_disconnect(services(request).store, domain=domain, account=_account(request))
    label = (record.name if record is not None else None) or domain
    return _confirm(
        request,
        label,
        f"/shopify/{segment(domain)}/disconnect",
        [
            f"The bot stops reading {domain}: the app gives up its access at Shopify (which uninstalls it), "
            "and its token is deleted here.",
            "To connect the store again later, install the app again from this page.",
        ],
    )


async def disconnect_shop(request: Request) -> Response:
    await checked_form(request)
    app = services(request)
    domain = shopify.normalize_shop(request.path_params["shop"])
    outcome = await disconnect.disconnect_shop(
        app.store, app.http, app.settings, domain=domain, account=_account(request)
    )
    return _finished(request, outcome)


async def confirm_page(request: Request) -> Response:
    page_id = _page_id(request)
    record = await disconnect.page_to_disconnect(services(request).store, page_id=page_id, account=_account(request))
    label = disconnect.page_label(record, page_id)
    return _confirm(
        request,
        label,
        f"/facebook/pages/{segment(page_id)}/disconnect",
        [
            f"The bot stops answering messages for {label}, and its Page token is deleted here.",
            "If it is the last Page your Facebook login connected, the app is removed from your Facebook account too.",
        ],
    )


async def disconnect_page(request: Request) -> Response:
    await checked_form(request)
    outcome = await disconnect.disconnect_page(
        services(request).store,
        lambda: graph_for(request),
        page_id=_page_id(request),
        account=_account(request),
    )
    return _finished(request, outcome)


routes = [
    Route("/shopify/{shop}/disconnect", confirm_shop, methods=["GET"]),
    Route("/shopify/{shop}/disconnect", disconnect_shop, methods=["POST"]),
    Route("/facebook/pages/{page_id}/disconnect", confirm_page, methods=["GET"]),
    Route("/facebook/pages/{page_id}/disconnect", disconnect_page, methods=["POST"]),
]
