"""Shopify: install (login → authorize → callback → token exchange) and the webhooks."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from service import keys, outcomes, revocations
from service.errors import (
    InvalidCallback,
    InvalidShop,
    InvalidState,
    NotConfigured,
    ServiceError,
    ShopOwnedElsewhere,
    StaleRequest,
    WebhookShopMismatch,
    WebhookUnauthorized,
)
from service.models import utcnow
from service.oauth_state import begin_flow, finish_flow
from service.providers import shopify
from service.routes.common import (
    browser_nonce,
    client_ip,
    read_body,
    require_settings,
    services,
    session_account,
    wants_json,
)
from service.routes.forms import back_to_status, refused
from service.routes.status import PENDING_INSTALL
from service.settings import Settings
from service.vault import rows

MAX_WEBHOOK_BYTES = 1 << 20


def _credentials(settings: Settings) -> tuple[str, str, str]:
    require_settings(
        "Shopify",
        SHOPIFY_API_KEY=settings.shopify_api_key,
        SHOPIFY_API_SECRET=settings.shopify_api_secret,
        SHOPIFY_REDIRECT_URI=settings.shopify_redirect_uri,
    )
    return settings.shopify_api_key, str(settings.shopify_api_secret), settings.shopify_redirect_uri  # type: ignore[return-value]


async def login_form(request: Request) -> Response:
    """The status page's form sends ?shop=; validate it, then go to the canonical login path."""
    domain = shopify.normalize_shop(request.query_params.get("shop", ""))
    return RedirectResponse(f"/shopify/{domain}/login", status_code=303)


async def login(request: Request) -> Response:
    app = services(request)
    client_id, _secret, redirect_uri = _credentials(app.settings)
    domain = shopify.normalize_shop(request.path_params["shop"])
    state = await begin_flow(
        app.store,
        provider=keys.SHOPIFY,
        browser_nonce=browser_nonce(request, create=True) or "",
        scopes=list(app.settings.shopify_scopes),
        redirect_uri=redirect_uri,
        shop=domain,
        account_uuid=session_account(request),
        client_ip=client_ip(request),
    )
    request.session[PENDING_INSTALL] = domain  # the callback takes it off; still there, the merchant left
    url = shopify.authorize_url(
        admin_base=shopify.admin_base_url(app.settings.shopify_admin_base_url, domain),
        client_id=client_id,
        scopes=list(app.settings.shopify_scopes),
        redirect_uri=redirect_uri,
        state=state,
    )
    return RedirectResponse(url, status_code=302)


async def callback(request: Request) -> Response:
    app = services(request)
    client_id, secret, _redirect_uri = _credentials(app.settings)
    request.session.pop(PENDING_INSTALL, None)  # back from Shopify: whatever follows, the page says it
    try:
        params = shopify.verify_callback(list(request.query_params.multi_items()), secret=secret, now=time.time())
        domain = shopify.normalize_shop(params["shop"])
        flow = await finish_flow(
            app.store,
            state=params["state"],
            provider=keys.SHOPIFY,
            browser_nonce=browser_nonce(request, create=False),
            shop=domain,
        )
    except (InvalidState, StaleRequest) as error:
        # Both come after the HMAC held, so Shopify sent this callback: a finished install coming back
        # (the browser's Back button) for a store this browser's account holds is no error.
        return await _already_connected(request, error)
    token = await shopify.exchange_code(
        app.http,
        admin_base=shopify.admin_base_url(app.settings.shopify_admin_base_url, domain),
        client_id=client_id,
        client_secret=secret,
        code=params["code"],
        now=utcnow(),
    )
    granted = shopify.check_scopes(flow.scopes, ",".join(token.scopes))
    admin_base = shopify.admin_base_url(app.settings.shopify_admin_base_url, domain)
    # The shop's name, where Shopify gives it; a connect never fails for the lack of one.
    name = await shopify.shop_name(
        app.http, admin_base=admin_base, access_token=token.access_token, api_version=app.settings.shopify_api_version
    )
    joined = await app.store.connect_shop(
        shop_key=shopify.shop_key(domain),
        token=rows.shopify_connected(domain, token, granted=granted, name=name),
        session_account=flow.account_uuid or session_account(request),
    )
    if joined.account is None:
        owned = ShopOwnedElsewhere(
            f"The store {domain} is connected to another account, so nothing was changed and this browser stays "
            "in its own account. To open the store's account, log out first, then connect the store again."
        )
        return refused(request, owned)
    request.session["account"] = joined.account
    outcomes.connected(keys.SHOPIFY, shop=domain, account=joined.account)
    return back_to_status(request, f"Connected {domain}" + (f" ({name})" if name else ""))


async def _already_connected(request: Request, error: ServiceError) -> Response:
    account = session_account(request)
    try:
        domain = shopify.normalize_shop(request.query_params.get("shop", ""))
    except InvalidShop:
        raise error from None
    link = keys.shopify_uuid_key(shopify.shop_key(domain))
    if wants_json(request) or account is None or await services(request).store.account_of(link) != account:
        raise error
    return back_to_status(request, f"{domain} is already connected.")


def _triggered_at(request: Request) -> datetime | None:
    value = request.headers.get("x-shopify-triggered-at")
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def webhooks(request: Request) -> Response:
    app = services(request)
    if app.settings.shopify_api_secret is None:
        raise NotConfigured("Shopify is not configured: set SHOPIFY_API_SECRET.")
    body = await read_body(request, limit=MAX_WEBHOOK_BYTES, too_large=_too_large)
    shopify.verify_webhook(
        body, request.headers.get("x-shopify-hmac-sha256"), secret=str(app.settings.shopify_api_secret)
    )
    topic = request.headers.get("x-shopify-topic", "")
    webhook_id = request.headers.get("x-shopify-webhook-id", "")
    if not topic or not webhook_id or len(webhook_id) > 255:
        raise InvalidCallback("A Shopify webhook needs X-Shopify-Topic and X-Shopify-Webhook-Id headers.")
    named = _header_shop(request)
    webhook = shopify.parse_webhook(topic, body)
    if webhook.shop is not None and named is not None and named != webhook.shop:
        raise WebhookShopMismatch("The webhook's X-Shopify-Shop-Domain header names another shop than its body.")
    outcome = await revocations.shopify_webhook(
        app.store,
        webhook_id=webhook_id,
        topic=topic,
        shop_domain=webhook.shop or named,
        triggered_at=_triggered_at(request),
    )
    outcomes.shopify_webhook(topic, shop=webhook.shop or named, status=outcome.status, deleted=outcome.deleted)
    if outcome.status == "ok":
        return JSONResponse({"status": "ok", "topic": topic, "deleted": outcome.deleted})
    return JSONResponse({"status": outcome.status, "topic": topic, "webhook_id": webhook_id})


def _too_large() -> WebhookUnauthorized:
    return WebhookUnauthorized("The webhook body is larger than any Shopify webhook.", status_code=413)


def _header_shop(request: Request) -> str | None:
    # Unsigned: only ever compared with the body's shop, and recorded for topics we do not act on.
    raw = request.headers.get("x-shopify-shop-domain")
    if raw is None:
        return None
    try:
        return shopify.normalize_shop(raw)
    except InvalidShop:
        raise InvalidCallback("The webhook names a shop that is not a Shopify shop domain.") from None


routes = [
    Route("/shopify/login", login_form, methods=["GET"]),
    Route("/shopify/callback", callback, methods=["GET"]),
    Route("/shopify/webhooks", webhooks, methods=["POST"]),
    Route("/shopify/{shop}/login", login, methods=["GET"]),
]
