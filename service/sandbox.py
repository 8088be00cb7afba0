"""Local stand-ins for Shopify and Facebook OAuth, for demo mode and for tests.

Neither provider can be reached from here, so this app imitates what docs/providers.md records:
the consent pages, the redirects, the token endpoints and their error bodies, a little of the Admin API
(shop.json, a GraphQL endpoint with a few products, its cost and throttle) and of the Graph API (the
Messenger Send API, which records what a bot sent), and signed Messenger webhooks to a bot. Demo mode
mounts it at /sandbox; tests run it through httpx.ASGITransport or a real uvicorn. Every signature
(callback HMAC, webhook HMAC, signed_request, appsecret_proof, X-Hub-Signature-256) is computed
here from docs/providers.md with hmac/hashlib/base64, never with service.providers: two implementations
checked against each other is what makes a test against the sandbox mean something.

State lives in memory, read by tests through the plain attributes and helpers on `Sandbox`. Nothing is
logged: tokens, codes and secrets only ever leave in responses. `Sandbox.requests` keeps everything it
was sent (tests assert on it), so it grows for as long as the process runs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import string
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

SHOPIFY_API_VERSION = "2026-10"
CODE_TTL = 600
SHOPIFY_ACCESS_TTL = 3600
SHOPIFY_REFRESH_TTL = 7_776_000
FACEBOOK_SHORT_TTL = 5400
FACEBOOK_LONG_TTL = 5_184_000
FACEBOOK_DATA_ACCESS_TTL = 7_776_000
# Shopify since 2026-08-28: a used refresh token stays usable until the app first uses its replacement,
# for at most 30 days from its first use (docs/providers.md); before that date, 60 minutes.
SHOPIFY_REFRESH_WINDOW = 30 * 86400
SHOPIFY_REFRESH_WINDOW_BEFORE_2026_08_28 = 3600
# Graph permissions granted per Page (debug_token lists their target_ids in granular_scopes).
PAGE_SCOPES = ("pages_show_list", "pages_messaging", "pages_manage_metadata")
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
PAGE_TASKS = ["ANALYZE", "ADVERTISE", "MESSAGING", "MODERATE", "CREATE_CONTENT", "MANAGE"]
DEFAULT_PAGES = [("101", "Acme Shoes"), ("102", "Acme Outlet"), ("103", "Acme Café")]
# Every sandbox shop sells these (title, price in USD).
PRODUCTS = [("Trail Runner", "89.00"), ("Canvas Sneaker", "55.00"), ("Wool Socks", "12.00"), ("Rain Boot", "70.00")]
# The Admin GraphQL API's leaky bucket, as Shopify documents it for a standard plan.
GRAPHQL_BUCKET = 1000.0
GRAPHQL_RESTORE_RATE = 50.0

_SHOP_RE = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
_ALNUM = string.ascii_letters + string.digits
_REVOKED = (
    "Error validating access token: The session has been invalidated because the user changed their "
    "password or Facebook has changed the session for security reasons."
)
_EXPIRED = "Error validating access token: Session has expired."
_UNPARSEABLE = "Invalid OAuth access token - Cannot parse access token"
_SHOPIFY_401 = "[API] Invalid API key or access token (unrecognized login or wrong password)"


@dataclass
class SandboxConfig:
    shopify_api_key: str
    shopify_api_secret: str = field(repr=False)
    facebook_app_id: str
    facebook_app_secret: str = field(repr=False)
    pages: list[tuple[str, str]] = field(default_factory=lambda: list(DEFAULT_PAGES))
    facebook_user_id: str = "9001"
    facebook_user_name: str = "Demo Merchant"
    app_name: str = "Salesbot"
    shopify_expiring: bool = True  # answer expiring offline tokens when the request has expiring=1
    page_size: int = 2  # /me/accounts page size, small so that paging is exercised
    service_base_url: str | None = None  # where `deliver` POSTs webhooks, e.g. "http://127.0.0.1:5000"
    # The user's tasks on a Page, by Page id, where they differ from every task (PAGE_TASKS).
    page_tasks: dict[str, list[str]] = field(default_factory=dict)
    # A shop's name as shop.json gives it, by shop domain; otherwise one made from the domain.
    shop_names: dict[str, str] = field(default_factory=dict)
    # How long a used refresh token stays usable while its replacement is unused (seconds; 0: never).
    shopify_refresh_window: float = SHOPIFY_REFRESH_WINDOW


@dataclass
class RecordedRequest:
    method: str
    path: str  # relative to where the sandbox is mounted
    query: list[tuple[str, str]]
    form: list[tuple[str, str]]  # form fields, or a JSON object's top-level keys (non-strings JSON-encoded)
    headers: list[tuple[str, str]]


@dataclass
class Revocation:
    provider: str  # "shopify" or "facebook"
    subject: str  # the shop domain, or the Facebook user id
    at: float


@dataclass
class IssuedCode:
    owner: str  # the shop domain, or the Facebook user id
    client_id: str
    scopes: list[str]
    expires_at: float
    redirect_uri: str | None = None  # Facebook: the dialog's redirect_uri, compared exactly at exchange
    used: bool = False


@dataclass
class IssuedToken:
    provider: str  # "shopify" or "facebook"
    kind: str  # shopify: "access" or "refresh"; facebook: "USER" or "PAGE"
    owner: str  # the shop domain, or the Facebook user id
    scopes: list[str]
    issued_at: float
    expires_at: float | None  # None: never expires by time
    revoked: bool = False
    partner: str | None = None  # shopify: the other half of an access/refresh pair
    page_id: str | None = None
    long_lived: bool = False
    revoked_subcode: int = 460  # facebook: the 190 subcode Graph answers once it is revoked
    data_access_expires_at: float | None = None  # facebook: when set, instead of issued_at + 90 days
    first_used_at: float | None = None  # shopify refresh: when it was first used (its window starts)
    predecessor: str | None = None  # shopify: the refresh token whose use issued this pair


@dataclass
class MessengerMessage:
    """One Messenger message: from a shopper to a Page ("in", sent to the bot as a webhook) or from the
    Page to the shopper ("out", sent by the bot through the Send API)."""

    direction: str
    page_id: str
    psid: str  # the shopper's page-scoped id
    text: str


# --- faults --------------------------------------------------------------------------------------

_COMMON_FAULTS = {"status_500", "malformed_json", "missing_fields", "slow", "drop"}
_FAULTS_FOR = {
    "shopify.approve": {"status_500", "slow", "drop", "scopes_reduced"},
    "shopify.access_token": _COMMON_FAULTS | {"scopes_reduced"},
    "shopify.shop": _COMMON_FAULTS,
    "shopify.graphql": _COMMON_FAULTS | {"throttled", "status_429", "status_401"},
    "facebook.access_token": _COMMON_FAULTS | {"graph_190"},
    "facebook.me": _COMMON_FAULTS | {"graph_190"},
    "facebook.accounts": _COMMON_FAULTS | {"graph_190"},
    "facebook.debug_token": _COMMON_FAULTS | {"graph_190"},
    "shopify.revoke": {"status_500", "slow", "drop"},
    "facebook.revoke": {"status_500", "slow", "drop", "graph_190"},
    "facebook.messages": _COMMON_FAULTS | {"graph_190", "rate_limited"},
}
_MISSING_FIELDS = {  # valid JSON, 200, without the field a client needs
    "shopify.access_token": {"scope": ""},
    "shopify.shop": {},
    "shopify.graphql": {"extensions": {}},
    "facebook.access_token": {"token_type": "bearer", "expires_in": FACEBOOK_SHORT_TTL},
    "facebook.me": {"name": "?"},
    "facebook.accounts": {"paging": {}},
    "facebook.debug_token": {},
    "facebook.messages": {"recipient_id": "0"},
}


@dataclass
class Fault:
    endpoint: str
    kind: str
    times: int = 1
    seconds: float = 5.0  # for "slow"; for "throttled" and "status_429", the wait the answer asks for


class Faults:
    """Make the next `times` calls to an endpoint misbehave; faults for one endpoint apply in order.

    Kinds: "status_500" (a 500, in the provider's error shape), "malformed_json" (200, body
    `{"access_token": `), "missing_fields" (200, valid JSON without access_token/data/id/shop),
    "graph_190" (Graph's 400 error 190/460), "drop" (see DroppedConnection), "slow" (sleep `seconds`, then
    answer normally), "scopes_reduced" (Shopify grants the requested scopes minus the last one; at
    "shopify.approve" the code carries fewer, at "shopify.access_token" only the answer does). A fault that
    replaces the answer does so before the endpoint runs: no code is used up, no token issued.
    At "shopify.graphql": "throttled" (200, a THROTTLED error, the bucket `seconds` of refill short of the
    query's cost, or empty when the cost is smaller),
    "status_429" (429, Retry-After `seconds`), "status_401" (401 whatever the token). At
    "facebook.messages": "rate_limited" (Graph error 32, usage headers stating a minute's wait).
    """

    def __init__(self) -> None:
        self.pending: list[Fault] = []

    def add(self, endpoint: str, kind: str, *, times: int = 1, seconds: float = 5.0) -> None:
        if endpoint not in _FAULTS_FOR:
            raise ValueError(f"Unknown fault endpoint {endpoint!r}; known: {', '.join(sorted(_FAULTS_FOR))}")
        if kind not in _FAULTS_FOR[endpoint]:
            allowed = ", ".join(sorted(_FAULTS_FOR[endpoint]))
            raise ValueError(f"Fault {kind!r} does not apply to {endpoint!r}; it takes: {allowed}")
        if times < 1:
            raise ValueError("times must be at least 1")
        self.pending.append(Fault(endpoint, kind, times, seconds))

    def clear(self) -> None:
        self.pending.clear()

    def take(self, endpoint: str) -> Fault | None:
        for fault in self.pending:
            if fault.endpoint == endpoint:
                fault.times -= 1
                if fault.times == 0:
                    self.pending.remove(fault)
                return fault
        return None


class DroppedConnection(Response):
    """Start a response, then fail before any body is sent.

    Under uvicorn the exception after `http.response.start` makes it close the socket: the client reads a
    status line and headers, then EOF, and httpx raises RemoteProtocolError. (Failing before the start would
    get a 500 from Starlette's ServerErrorMiddleware instead.) httpx.ASGITransport re-raises the app's
    exception as is, so the exception raised here is the one a real drop gives a client: RemoteProtocolError.
    uvicorn logs the exception ("Exception in ASGI application"); its message holds no secret.
    """

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        raise httpx.RemoteProtocolError("Sandbox fault: connection dropped without a complete response")


def _fault_response(endpoint: str, kind: str) -> Response | None:
    if kind == "status_500":
        if endpoint.startswith("facebook."):
            return _graph_error("An unexpected error has occurred. Please retry your request later.",
                                code=2, status=500)
        return JSONResponse({"errors": "Internal Server Error"}, status_code=500)
    if kind == "malformed_json":
        return Response('{"access_token": ', media_type="application/json")
    if kind == "missing_fields":
        return JSONResponse(_MISSING_FIELDS[endpoint])
    if kind == "graph_190":
        return _graph_error(_REVOKED, code=190, subcode=460)
    if kind == "drop":
        return DroppedConnection()
    if kind == "status_401":
        return JSONResponse({"errors": _SHOPIFY_401}, status_code=401)
    if kind == "rate_limited":
        return _graph_rate_limited()
    return None  # "slow" has already slept; "scopes_reduced", "throttled", "status_429": the endpoint's


def _graph_rate_limited() -> JSONResponse:
    response = _graph_error("(#32) Page request limit reached", code=32)
    response.headers["X-App-Usage"] = json.dumps({"call_count": 100, "total_time": 20, "total_cputime": 10})
    usage = [{"type": "pages", "call_count": 100, "total_cputime": 10, "total_time": 20,
              "estimated_time_to_regain_access": 1}]
    response.headers["X-Business-Use-Case-Usage"] = json.dumps({"101": usage})
    return response


# --- small helpers -------------------------------------------------------------------------------


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _split_scopes(scope: str) -> list[str]:
    return [s.strip() for s in scope.split(",") if s.strip()]


def _with_query(url: str, pairs: Sequence[tuple[str, str]], fragment: str = "") -> str:
    return url + ("&" if "?" in url else "?") + urlencode(list(pairs)) + fragment


def _graph_error(message: str, *, code: int, type_: str = "OAuthException", subcode: int | None = None,
                 status: int = 400) -> JSONResponse:
    error: dict[str, object] = {"message": message, "type": type_, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = _random(11)
    return JSONResponse({"error": error}, status_code=status)


def _shopify_error(error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)


# A consent page must not be framed by another site (clickjacking an Allow), as the real ones are not.
PAGE_HEADERS = {"Content-Security-Policy": "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff"}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"</head><body>{body}</body></html>",
        status_code=status,
        headers=PAGE_HEADERS,
    )


def _hidden(fields: dict[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items()
    )


def _prefix(request: Request) -> str:
    """The mount point (Starlette puts it in root_path), so links work under /sandbox and at the root."""
    return request.scope.get("root_path", "")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _shop_name(shop: str) -> str:
    return shop.removesuffix(".myshopify.com").replace("-", " ").title()


def _shop_id(shop: str) -> int:
    return int(hashlib.sha256(shop.encode()).hexdigest()[:10], 16)


# --- the sandbox ---------------------------------------------------------------------------------


class Sandbox:
    def __init__(self, config: SandboxConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.requests: list[RecordedRequest] = []
        self.faults = Faults()
        self.shopify_codes: dict[str, IssuedCode] = {}
        self.facebook_codes: dict[str, IssuedCode] = {}
        self.tokens: dict[str, IssuedToken] = {}  # both providers; token strings never collide
        self._page_tokens: dict[tuple[str, str], str] = {}  # (user token, page id) -> page token
        self.revocations: list[Revocation] = []  # what apps gave up (see "Disconnecting", below)
        self.messages: list[MessengerMessage] = []  # the conversations, in order (GET /messenger shows them)
        self._buckets: dict[str, tuple[float, float]] = {}  # shop -> (points available, when last counted)
        self.withheld: dict[str, set[str]] = {}  # scope -> Page ids the user took it back for
        r = self._route
        self.app = Starlette(routes=[
            r("/shopify/{shop}/admin", self.shopify_admin),
            r("/shopify/{shop}/admin/oauth/authorize", self.shopify_authorize),
            r("/shopify/{shop}/admin/oauth/authorize/approve", self.shopify_approve, "POST",
              "shopify.approve"),
            r("/shopify/{shop}/admin/oauth/access_token", self.shopify_access_token, "POST",
              "shopify.access_token"),
            r("/shopify/{shop}/admin/api/{version}/shop.json", self.shopify_shop, "GET", "shopify.shop"),
            r("/shopify/{shop}/admin/api/{version}/graphql.json", self.shopify_graphql, "POST", "shopify.graphql"),
            r("/facebook/{version}/dialog/oauth", self.facebook_dialog),
            r("/facebook/{version}/dialog/oauth/approve", self.facebook_approve, "POST"),
            r("/facebook/{version}/dialog/oauth/cancel", self.facebook_cancel, "POST"),
            r("/graph/{version}/oauth/access_token", self.facebook_access_token, "GET",
              "facebook.access_token"),
            r("/graph/{version}/me", self.facebook_me, "GET", "facebook.me"),
            r("/graph/{version}/me/accounts", self.facebook_accounts, "GET", "facebook.accounts"),
            r("/graph/debug_token", self.facebook_debug_token, "GET", "facebook.debug_token"),
            r("/graph/{version}/debug_token", self.facebook_debug_token, "GET", "facebook.debug_token"),
            *self._disconnect_routes(),
            r("/graph/{version}/me/messages", self.facebook_send, "POST", "facebook.messages"),
            r("/messenger", self.messenger_page),
            Route("/{path:path}", self._not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ])

    # --- state for tests and demo buttons ---

    def _alive(self, token: IssuedToken) -> bool:
        now = self.clock()
        if token.first_used_at is not None and now >= token.first_used_at + self.config.shopify_refresh_window:
            return False  # a used refresh token past its window
        return not token.revoked and (token.expires_at is None or now < token.expires_at)

    def _valid(self, provider: str, kind: str | None = None, owner: str | None = None) -> set[str]:
        return {
            value for value, t in self.tokens.items()
            if t.provider == provider and kind in (None, t.kind) and owner in (None, t.owner)
            and self._alive(t)
        }

    def valid_shopify_tokens(self, shop: str) -> set[str]:
        return self._valid("shopify", "access", shop)

    def valid_shopify_refresh_tokens(self, shop: str) -> set[str]:
        return self._valid("shopify", "refresh", shop)

    def expire_shopify_access(self, shop: str) -> None:
        """The shop's access tokens reach their hour: the Admin API refuses them; refresh tokens still work."""
        for t in self.tokens.values():
            if t.provider == "shopify" and t.owner == shop and t.kind == "access":
                t.expires_at = self.clock()

    def sent_messages(self, page_id: str | None = None) -> list[MessengerMessage]:
        """What bots sent through the Send API (optionally for one Page), in order."""
        return [m for m in self.messages if m.direction == "out" and page_id in (None, m.page_id)]

    def revoke_shopify(self, shop: str) -> None:
        """What an uninstall does: every access and refresh token of the shop stops working."""
        for t in self.tokens.values():
            if t.provider == "shopify" and t.owner == shop:
                t.revoked = True

    def valid_facebook_tokens(self) -> set[str]:
        return self._valid("facebook")

    def revoke_facebook_user(self) -> None:
        """A password change or app removal: user and Page tokens die, Graph answers 190/460."""
        for t in self.tokens.values():
            if t.provider == "facebook":
                t.revoked = True

    # --- a Page's token going bad, as the sweep's debug_token finds it ---

    def _page_tokens_of(self, page_id: str) -> list[IssuedToken]:
        return [t for t in self.tokens.values() if t.provider == "facebook" and t.page_id == page_id]

    def invalidate_page_token(self, page_id: str, *, subcode: int = 460) -> None:
        """The Page's tokens die as Facebook kills them: Graph and debug_token answer 190 with `subcode`
        (458 app removed, 459 checkpoint, 460 password changed, 463 expired, 464 unconfirmed, 467 invalid)."""
        for t in self._page_tokens_of(page_id):
            t.revoked, t.revoked_subcode = True, subcode

    def end_data_access(self, page_id: str, *, at: float) -> None:
        """Facebook's data access for the Page's tokens ends at `at` (Unix time): debug_token says so."""
        for t in self._page_tokens_of(page_id):
            t.data_access_expires_at = at

    def withhold_permission(self, page_id: str, scope: str = "pages_messaging") -> None:
        """The user took back `scope` for this Page only (granular_scopes no longer names it)."""
        self.withheld.setdefault(scope, set()).add(page_id)

    # What the demo's form can make Facebook do to a Page's token, in the words it shows.
    PAGE_EVENTS = {
        "password_changed": "Change the Facebook password (its tokens die)",
        "app_removed": "Remove the app from the Facebook account",
        "data_access_ending": "Let data access run out in 10 days",
        "messaging_withheld": "Take back pages_messaging for this Page",
    }

    def page_event(self, page_id: str, event: str) -> None:
        if event == "password_changed":
            self.invalidate_page_token(page_id, subcode=460)
        elif event == "app_removed":
            self.invalidate_page_token(page_id, subcode=458)
        elif event == "data_access_ending":
            self.end_data_access(page_id, at=self.clock() + 10 * 86400)
        elif event == "messaging_withheld":
            self.withhold_permission(page_id, "pages_messaging")
        else:
            raise ValueError(f"Unknown Page event {event!r}; known: {', '.join(self.PAGE_EVENTS)}")

    def shopify_webhook_payload(self, *, shop: str, topic: str) -> dict:
        """The body Shopify documents for a topic: the shop resource for app/uninstalled, the compliance
        bodies for the others."""
        shop_id = _shop_id(shop)
        customer = {"id": 191167, "email": "john@example.com", "phone": "555-625-1199"}
        orders = [299938, 280263, 220458]
        payloads: dict[str, dict] = {
            "app/uninstalled": {"id": shop_id, "name": _shop_name(shop), "email": f"owner@{shop}", "domain": shop,
                                "myshopify_domain": shop},
            "shop/redact": {"shop_id": shop_id, "shop_domain": shop},
            "customers/redact": {"shop_id": shop_id, "shop_domain": shop, "customer": customer,
                                 "orders_to_redact": orders},
            "customers/data_request": {"shop_id": shop_id, "shop_domain": shop, "orders_requested": orders,
                                       "customer": customer, "data_request": {"id": 9999}},
        }
        if topic not in payloads:
            raise ValueError(f"No documented body for the topic {topic!r}; pass payload=")
        return payloads[topic]

    def shopify_webhook(self, *, shop: str, topic: str, payload: dict | None = None,
                        webhook_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        """A signed delivery; without `payload`, the body the topic documents (shopify_webhook_payload)."""
        if payload is None:
            payload = self.shopify_webhook_payload(shop=shop, topic=topic)
        body = json.dumps(payload, separators=(",", ":")).encode()
        digest = hmac.new(self.config.shopify_api_secret.encode(), body, hashlib.sha256).digest()
        return body, {
            "Content-Type": "application/json",
            "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": shop,
            "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
            "X-Shopify-API-Version": SHOPIFY_API_VERSION,
        }

    def facebook_signed_request(self, payload: dict) -> str:
        data = {**payload, "algorithm": "HMAC-SHA256"}
        data.setdefault("issued_at", int(self.clock()))
        encoded = _b64url(json.dumps(data, separators=(",", ":")).encode())
        sig = hmac.new(self.config.facebook_app_secret.encode(), encoded.encode(), hashlib.sha256).digest()
        return f"{_b64url(sig)}.{encoded}"

    def messenger_webhook(self, *, page_id: str, psid: str, text: str) -> tuple[bytes, dict[str, str]]:
        """A Messenger `messages` event, as Meta delivers it: JSON, X-Hub-Signature-256 over the raw body."""
        now_ms = int(self.clock() * 1000)
        event = {"sender": {"id": psid}, "recipient": {"id": page_id}, "timestamp": now_ms,
                 "message": {"mid": f"m_{_random(24)}", "text": text}}
        body = json.dumps({"object": "page", "entry": [{"id": page_id, "time": now_ms, "messaging": [event]}]},
                          separators=(",", ":")).encode()
        digest = hmac.new(self.config.facebook_app_secret.encode(), body, hashlib.sha256).hexdigest()
        return body, {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"}

    async def send_messenger_message(self, path: str, *, page_id: str, psid: str, text: str,
                                     client: httpx.AsyncClient | None = None) -> httpx.Response:
        """A shopper writes to the Page: the signed webhook goes to `path` on the service (where the bot is)."""
        body, headers = self.messenger_webhook(page_id=page_id, psid=psid, text=text)
        self.messages.append(MessengerMessage("in", page_id, psid, text))
        return await self.deliver(path, body, headers, client=client)

    async def deliver(self, path: str, body: bytes, headers: dict[str, str], *,
                      client: httpx.AsyncClient | None = None) -> httpx.Response:
        """POST a webhook built above to the service, as the provider would."""
        if not self.config.service_base_url:
            raise RuntimeError("SandboxConfig.service_base_url is not set, so there is nowhere to deliver to")
        url = self.config.service_base_url.rstrip("/") + path
        if client is not None:
            return await client.post(url, content=body, headers=headers)
        async with httpx.AsyncClient(timeout=10.0) as own:
            return await own.post(url, content=body, headers=headers)

    # --- plumbing ---

    def _route(self, path: str, handler: Callable[[Request], Awaitable[Response]], method: str = "GET",
               fault_endpoint: str | None = None) -> Route:
        async def endpoint(request: Request) -> Response:
            await self._record(request)
            request.state.fault = None
            request.state.fault_seconds = None
            if fault_endpoint is not None and (fault := self.faults.take(fault_endpoint)) is not None:
                request.state.fault = fault.kind
                request.state.fault_seconds = fault.seconds
                if fault.kind == "slow":
                    await asyncio.sleep(fault.seconds)  # a real sleep: it imitates a slow server
                if (response := _fault_response(fault_endpoint, fault.kind)) is not None:
                    return response
            return await handler(request)

        return Route(path, endpoint, methods=[method])

    async def _record(self, request: Request) -> None:
        form: list[tuple[str, str]] = []
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and content_type.startswith("application/json"):
            try:
                data = json.loads(await request.body())
            except ValueError:
                data = None
            if isinstance(data, dict):
                form = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in data.items()]
        elif request.method == "POST" and content_type.startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")):
            form = [(k, str(v)) for k, v in (await request.form()).multi_items()]
        request.state.form = dict(form)
        path, root = request.url.path, _prefix(request)
        self.requests.append(RecordedRequest(
            method=request.method,
            path=path[len(root):] if root and path.startswith(root) else path,
            query=list(request.query_params.multi_items()),
            form=form,
            headers=list(request.headers.items()),
        ))

    async def _not_found(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"error": "not_found", "message": "The sandbox has no such endpoint"}, 404)

    # --- Shopify ---

    def _shop_or_none(self, request: Request) -> str | None:
        shop = request.path_params["shop"]
        return shop if _SHOP_RE.fullmatch(shop) else None

    def _authorize_problem(self, params: dict[str, str]) -> HTMLResponse | None:
        if params.get("client_id") != self.config.shopify_api_key:
            message = "Oauth error invalid_request: Could not find Shopify API application with api_key"
        elif not params.get("redirect_uri", "").startswith(("http://", "https://")):
            message = "Oauth error invalid_request: The redirect_uri is missing or not a URL"
        else:
            return None
        return _page("Oauth error", f"<h1>{html.escape(message)}</h1>", status=400)

    async def shopify_admin(self, request: Request) -> Response:
        shop = html.escape(request.path_params["shop"])
        return _page(f"{shop} admin", f"<h1>{shop} admin (sandbox)</h1><p>No app was installed.</p>")

    async def shopify_authorize(self, request: Request) -> Response:
        shop = self._shop_or_none(request)
        if shop is None:
            return _page("Not found", "<h1>There is no store at this address.</h1>", status=404)
        params = dict(request.query_params)
        if (problem := self._authorize_problem(params)) is not None:
            return problem
        fields = {k: params.get(k, "") for k in ("client_id", "scope", "redirect_uri", "state")}
        scopes = ", ".join(_split_scopes(fields["scope"])) or "no access scopes"
        base = f"{_prefix(request)}/shopify/{shop}/admin"
        app, esc_shop = html.escape(self.config.app_name), html.escape(shop)
        # Shopify documents no redirect for a declined install (the merchant stays in their admin):
        # the stand-in's Cancel goes back to the app's home, the origin of its redirect URI.
        home = html.escape(_origin(fields["redirect_uri"]) + "/")
        return self._consent_page("Shopify", f"Install {self.config.app_name}", (
            f"<h1>Install {app} on {esc_shop}?</h1><p>It asks for: {html.escape(scopes)}</p>"
            f'<div class="actions"><form method="post" action="{html.escape(base)}/oauth/authorize/approve">'
            f'{_hidden(fields)}<button type="submit" id="allow">Install app</button></form>'
            f'<a class="button secondary" id="cancel" href="{home}">Cancel</a></div>'
        ))

    async def shopify_approve(self, request: Request) -> Response:
        shop = self._shop_or_none(request)
        if shop is None:
            return _page("Not found", "<h1>There is no store at this address.</h1>", status=404)
        form: dict[str, str] = request.state.form
        if (problem := self._authorize_problem(form)) is not None:
            return problem
        scopes = _split_scopes(form.get("scope", ""))
        if request.state.fault == "scopes_reduced":
            scopes = scopes[:-1]
        now = self.clock()
        code = secrets.token_hex(16)
        self.shopify_codes[code] = IssuedCode(shop, form["client_id"], scopes, now + CODE_TTL)
        host = base64.b64encode(f"{shop}/admin".encode()).decode().rstrip("=")
        params = {"code": code, "host": host, "shop": shop, "timestamp": str(int(now))}
        if form.get("state"):
            params["state"] = form["state"]
        message = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        params["hmac"] = hmac.new(self.config.shopify_api_secret.encode(), message.encode(),
                                  hashlib.sha256).hexdigest()
        return RedirectResponse(_with_query(form["redirect_uri"], sorted(params.items())), status_code=302)

    async def shopify_access_token(self, request: Request) -> Response:
        shop = request.path_params["shop"]
        p = {**request.query_params, **request.state.form}
        if p.get("client_id") != self.config.shopify_api_key or not _same(p.get("client_secret"),
                                                                           self.config.shopify_api_secret):
            return _shopify_error("invalid_client", "Client authentication failed due to unknown client, no "
                                  "client authentication included, or unsupported authentication method.")
        grant_type = p.get("grant_type", "authorization_code")
        if grant_type == "refresh_token":
            return self._refresh(shop, p.get("refresh_token", ""))
        if grant_type == TOKEN_EXCHANGE:
            subject = self.tokens.get(p.get("subject_token", ""))
            if (subject is None or subject.kind != "access" or subject.owner != shop
                    or subject.expires_at is not None or not self._alive(subject)):
                return _shopify_error("invalid_subject_token", "The subject token is not a valid "
                                      "non-expiring offline access token for this shop.")
            subject.revoked = True  # irreversible, as documented
            return JSONResponse(self._issue_shopify(shop, subject.scopes, expiring=True))
        if grant_type != "authorization_code":
            return _shopify_error("unsupported_grant_type", "The grant type is not supported.")
        code = self.shopify_codes.get(p.get("code", ""))
        if code is None or code.used or code.owner != shop or self.clock() >= code.expires_at:
            return _shopify_error("invalid_request",
                                  "The authorization code was not found or was already used")
        code.used = True
        scopes = code.scopes[:-1] if request.state.fault == "scopes_reduced" else code.scopes
        expiring = p.get("expiring") in ("1", "true") and self.config.shopify_expiring
        return JSONResponse(self._issue_shopify(shop, scopes, expiring=expiring))

    def _revoke_pair(self, token: IssuedToken) -> None:
        token.revoked = True
        if token.partner is not None and token.partner in self.tokens:
            self.tokens[token.partner].revoked = True

    def _refresh(self, shop: str, value: str) -> Response:
        """A new pair for a refresh token. The old access token stops; the refresh token stays usable for
        the window while its replacement is unused (used again meanwhile, it gives another pair, and the
        unused one it replaces stops: one active token per app and shop); using the replacement retires it."""
        old = self.tokens.get(value)
        if old is None or old.kind != "refresh" or old.owner != shop or not self._alive(old):
            return _shopify_error("invalid_grant", "The refresh token is invalid, expired or already used.")
        self._retire_predecessor(old)
        for issued in self.tokens.values():  # the pairs an earlier use of it gave, never used
            if issued.predecessor == value:
                issued.revoked = True
        if old.partner is not None and old.partner in self.tokens:
            self.tokens[old.partner].revoked = True
        if old.first_used_at is None:
            old.first_used_at = self.clock()
        if self.config.shopify_refresh_window <= 0:
            old.revoked = True
        body = self._issue_shopify(shop, old.scopes, expiring=True)
        for new in (str(body["access_token"]), str(body["refresh_token"])):
            self.tokens[new].predecessor = value
        return JSONResponse(body)

    def _retire_predecessor(self, token: IssuedToken) -> None:
        """The app used this token: the refresh token whose use issued it is spent for good."""
        if token.predecessor is not None and token.predecessor in self.tokens:
            self.tokens[token.predecessor].revoked = True
        token.predecessor = None

    def _issue_shopify(self, shop: str, scopes: list[str], *, expiring: bool) -> dict[str, object]:
        now = self.clock()
        access = f"shpat_{secrets.token_hex(16)}"
        body: dict[str, object] = {"access_token": access, "scope": ",".join(scopes)}
        expires_at = now + SHOPIFY_ACCESS_TTL if expiring else None
        token = IssuedToken("shopify", "access", shop, scopes, now, expires_at)
        if expiring:
            refresh = f"shprt_{secrets.token_hex(16)}"
            token.partner = refresh
            self.tokens[refresh] = IssuedToken("shopify", "refresh", shop, scopes, now,
                                               now + SHOPIFY_REFRESH_TTL, partner=access)
            body |= {"expires_in": SHOPIFY_ACCESS_TTL, "refresh_token": refresh,
                     "refresh_token_expires_in": SHOPIFY_REFRESH_TTL}
        self.tokens[access] = token
        return body

    def _admin_token_valid(self, request: Request, shop: str) -> bool:
        """The Admin API's check: X-Shopify-Access-Token is a live access token of this shop."""
        token = self.tokens.get(request.headers.get("x-shopify-access-token", ""))
        if token is None or token.kind != "access" or token.owner != shop or not self._alive(token):
            return False
        self._retire_predecessor(token)
        return True

    async def shopify_shop(self, request: Request) -> Response:
        shop = request.path_params["shop"]
        if not self._admin_token_valid(request, shop):
            return JSONResponse({"errors": _SHOPIFY_401}, status_code=401)
        name = self.config.shop_names.get(shop) or _shop_name(shop)
        return JSONResponse({"shop": {"id": _shop_id(shop), "name": name, "myshopify_domain": shop,
                                      "domain": shop}})

    def _spend(self, shop: str, cost: float) -> tuple[float, bool]:
        """Take `cost` points from the shop's bucket (refilled at the restore rate): what is left, and
        whether there was enough."""
        now = self.clock()
        available, since = self._buckets.get(shop, (GRAPHQL_BUCKET, now))
        available = min(GRAPHQL_BUCKET, available + (now - since) * GRAPHQL_RESTORE_RATE)
        enough = available >= cost
        if enough:
            available -= cost
        self._buckets[shop] = (available, now)
        return available, enough

    async def shopify_graphql(self, request: Request) -> Response:
        shop = request.path_params["shop"]
        if not self._admin_token_valid(request, shop):
            return JSONResponse({"errors": _SHOPIFY_401}, status_code=401)
        fault = request.state.fault
        seconds: float = request.state.fault_seconds or 1.0
        if fault == "status_429":
            return JSONResponse({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to "
                                 "resume uninterrupted service."}, status_code=429,
                                headers={"Retry-After": f"{seconds:g}"})
        try:
            payload = json.loads(await request.body())
        except ValueError:
            payload = None
        query = payload.get("query") if isinstance(payload, dict) else None
        if not isinstance(query, str) or not query.strip():
            return JSONResponse({"errors": {"query": "Required parameter missing or invalid"}}, status_code=400)
        variables = payload.get("variables") if isinstance(payload.get("variables"), dict) else {}
        first = variables.get("first")
        if not isinstance(first, int) or isinstance(first, bool):
            found = re.search(r"first:\s*(\d+)", query)
            first = int(found.group(1)) if found else 10
        first = max(0, min(first, 250))
        wants_products = re.search(r"\bproducts\s*\(", query) is not None
        # Roughly Shopify's rule: an object costs 1, a connection its page size more.
        requested = 2.0 + first if wants_products else 1.0
        if fault == "throttled":
            available = max(0.0, requested - seconds * GRAPHQL_RESTORE_RATE)
            return JSONResponse({"errors": [{"message": "Throttled", "extensions": {
                "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": {"cost": self._cost(requested, None, available)}})
        available, enough = self._spend(shop, requested)
        if not enough:
            return JSONResponse({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                                 "extensions": {"cost": self._cost(requested, None, available)}})
        data: dict[str, object] = {}
        if re.search(r"\bshop\s*\{", query):
            data["shop"] = {"name": _shop_name(shop), "myshopifyDomain": shop}
        if wants_products:
            shop_id = _shop_id(shop)
            data["products"] = {"edges": [
                {"node": {"id": f"gid://shopify/Product/{shop_id % 10_000 * 100 + n}", "title": title,
                          "handle": title.lower().replace(" ", "-"),
                          "priceRangeV2": {"minVariantPrice": {"amount": price, "currencyCode": "USD"}}}}
                for n, (title, price) in enumerate(PRODUCTS[:first], start=1)]}
        if not data:
            return JSONResponse({"errors": [{"message": "This stand-in answers only shop and products queries",
                                             "extensions": {"code": "undefinedField"}}]})
        actual = 2.0 + len(data["products"]["edges"]) if wants_products else 1.0  # type: ignore[index]
        return JSONResponse({"data": data, "extensions": {"cost": self._cost(requested, actual, available)}})

    @staticmethod
    def _cost(requested: float, actual: float | None, available: float) -> dict[str, object]:
        return {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": {
            "maximumAvailable": GRAPHQL_BUCKET, "currentlyAvailable": available,
            "restoreRate": GRAPHQL_RESTORE_RATE}}

    # --- Facebook: the dialog ---

    def _dialog_problem(self, request: Request, params: dict[str, str]) -> HTMLResponse | None:
        if not request.path_params["version"].startswith("v"):
            return _page("Not found", "<h1>Sorry, this content isn't available right now.</h1>", status=404)
        if params.get("client_id") != self.config.facebook_app_id:
            message = "Invalid App ID: The provided app ID does not look like a valid app ID."
        elif not params.get("redirect_uri", "").startswith(("http://", "https://")):
            message = "URL blocked: the redirect_uri is missing or not a URL."
        else:
            return None
        return _page("Error", f"<h1>{html.escape(message)}</h1>", status=400)

    async def facebook_dialog(self, request: Request) -> Response:
        params = dict(request.query_params)
        if (problem := self._dialog_problem(request, params)) is not None:
            return problem
        fields = {k: params.get(k, "") for k in ("client_id", "redirect_uri", "state", "scope")}
        base = html.escape(f"{_prefix(request)}/facebook/{request.path_params['version']}/dialog/oauth")
        user, app = html.escape(self.config.facebook_user_name), html.escape(self.config.app_name)
        pages = "".join(f"<li>{html.escape(name)}</li>" for _, name in self.config.pages)
        scopes = html.escape(", ".join(_split_scopes(fields["scope"])) or "public_profile")
        return self._consent_page("Facebook", f"Log in with Facebook: {self.config.app_name}", (
            f"<h1>{user}: allow {app} to manage your Pages?</h1><ul>{pages}</ul><p>Permissions: {scopes}</p>"
            f'<div class="actions"><form method="post" action="{base}/approve">{_hidden(fields)}'
            f'<button type="submit" id="allow">Continue as {user}</button></form>'
            f'<form method="post" action="{base}/cancel">{_hidden(fields)}'
            f'<button type="submit" class="secondary" id="cancel">Cancel</button></form></div>'
        ))

    async def facebook_approve(self, request: Request) -> Response:
        form: dict[str, str] = request.state.form
        if (problem := self._dialog_problem(request, form)) is not None:
            return problem
        scopes = _split_scopes(form.get("scope", ""))
        scopes += [] if "public_profile" in scopes else ["public_profile"]
        code = f"AQ{_random(62)}"
        self.facebook_codes[code] = IssuedCode(self.config.facebook_user_id, form["client_id"], scopes,
                                               self.clock() + CODE_TTL, redirect_uri=form["redirect_uri"])
        pairs = [("code", code)] + ([("state", form["state"])] if form.get("state") else [])
        return RedirectResponse(_with_query(form["redirect_uri"], pairs, "#_=_"), status_code=302)

    async def facebook_cancel(self, request: Request) -> Response:
        form: dict[str, str] = request.state.form
        if (problem := self._dialog_problem(request, form)) is not None:
            return problem
        pairs = [("error", "access_denied"), ("error_code", "200"),
                 ("error_description", "Permissions error."), ("error_reason", "user_denied")]
        pairs += [("state", form["state"])] if form.get("state") else []
        return RedirectResponse(_with_query(form["redirect_uri"], pairs, "#_=_"), status_code=302)

    # --- Facebook: the Graph API ---

    def _issue_facebook(self, *, kind: str, scopes: list[str], expires_at: float | None,
                        long_lived: bool = False, page_id: str | None = None) -> str:
        value = f"EAAP{_random(120)}" if kind == "PAGE" else f"EAA{_random(120)}"
        self.tokens[value] = IssuedToken("facebook", kind, self.config.facebook_user_id, scopes, self.clock(),
                                         expires_at, page_id=page_id, long_lived=long_lived)
        return value

    def _token_problem(self, token: IssuedToken | None) -> JSONResponse | None:
        if token is None or token.provider != "facebook":
            return _graph_error(_UNPARSEABLE, code=190)
        if token.revoked:
            return _graph_error(_REVOKED, code=190, subcode=token.revoked_subcode)
        if not self._alive(token):
            return _graph_error(_EXPIRED, code=190, subcode=463)
        return None

    def _graph_caller(self, request: Request) -> tuple[str, IssuedToken] | JSONResponse:
        """Check the access token and its appsecret_proof, as Graph does with "Require App Secret" on."""
        if not request.path_params.get("version", "v").startswith("v"):
            return _graph_error("Unknown path components", code=2500)
        value = request.query_params.get("access_token", "")
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if not value and scheme.lower() in ("bearer", "oauth"):
            value = credential.strip()
        if not value:
            return _graph_error("An active access token must be used to query information about the current "
                                "user.", code=2500)
        secret = self.config.facebook_app_secret.encode()
        expected = hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()
        if not _same(request.query_params.get("appsecret_proof"), expected):
            return _graph_error("Invalid appsecret_proof provided in the API argument", code=100,
                                type_="GraphMethodException")
        token = self.tokens.get(value)
        if (problem := self._token_problem(token)) is not None:
            return problem
        assert token is not None
        return value, token

    async def facebook_access_token(self, request: Request) -> Response:
        q = request.query_params
        if not request.path_params["version"].startswith("v"):
            return _graph_error("Unknown path components", code=2500)
        if q.get("client_id") != self.config.facebook_app_id:
            return _graph_error("Error validating application. Invalid application ID.", code=101)
        if not _same(q.get("client_secret"), self.config.facebook_app_secret):
            return _graph_error("Error validating client secret.", code=1)
        if q.get("grant_type") == "fb_exchange_token":
            short = self.tokens.get(q.get("fb_exchange_token", ""))
            if (problem := self._token_problem(short)) is not None:
                return problem
            assert short is not None
            if short.kind != "USER":
                return _graph_error("fb_exchange_token must be a user access token", code=100)
            value = self._issue_facebook(kind="USER", scopes=short.scopes, long_lived=True,
                                         expires_at=self.clock() + FACEBOOK_LONG_TTL)
            return JSONResponse({"access_token": value, "token_type": "bearer",
                                 "expires_in": FACEBOOK_LONG_TTL})
        code = self.facebook_codes.get(q.get("code", ""))
        if code is None:
            return _graph_error("Invalid verification code format.", code=100)
        if code.used:
            return _graph_error("This authorization code has been used.", code=100, subcode=36009)
        if self.clock() >= code.expires_at:
            return _graph_error("This authorization code has expired.", code=100, subcode=36007)
        if q.get("redirect_uri") != code.redirect_uri:
            return _graph_error("Error validating verification code. Please make sure your redirect_uri is "
                                "identical to the one you used in the OAuth dialog request", code=100)
        code.used = True
        value = self._issue_facebook(kind="USER", scopes=code.scopes,
                                     expires_at=self.clock() + FACEBOOK_SHORT_TTL)
        return JSONResponse({"access_token": value, "token_type": "bearer", "expires_in": FACEBOOK_SHORT_TTL})

    async def facebook_me(self, request: Request) -> Response:
        caller = self._graph_caller(request)
        if isinstance(caller, Response):
            return caller
        _, token = caller
        if token.kind == "PAGE":  # /me with a Page token is the Page
            name = dict(self.config.pages).get(token.page_id or "", "")
            return JSONResponse({"id": token.page_id, "name": name})
        return JSONResponse({"id": self.config.facebook_user_id, "name": self.config.facebook_user_name})

    async def facebook_accounts(self, request: Request) -> Response:
        caller = self._graph_caller(request)
        if isinstance(caller, Response):
            return caller
        value, user = caller
        if user.kind != "USER":
            return _graph_error("(#100) Tried accessing nonexisting field (accounts) on node type (Page)",
                                code=100)
        q = request.query_params
        ids = [page_id for page_id, _ in self.config.pages]
        start = 0
        if after := q.get("after"):
            try:
                start = ids.index(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)).decode()) + 1
            except ValueError:  # also covers binascii.Error and UnicodeDecodeError
                return _graph_error("(#100) The after cursor is invalid", code=100)
        limit = int(q["limit"]) if q.get("limit", "").isdigit() else 0
        size = min(self.config.page_size, limit) if limit > 0 else self.config.page_size
        wanted = set(q["fields"].split(",")) | {"id"} if q.get("fields") else None
        chunk = self.config.pages[start:start + size]
        data = []
        for page_id, name in chunk:
            row = {"id": page_id, "name": name, "access_token": self._page_token(value, user, page_id),
                   "category": "Retail", "tasks": self.config.page_tasks.get(page_id, PAGE_TASKS)}
            data.append({k: v for k, v in row.items() if wanted is None or k in wanted})
        body: dict[str, object] = {"data": data}
        if chunk:
            cursors = {"before": _b64url(chunk[0][0].encode()), "after": _b64url(chunk[-1][0].encode())}
            paging: dict[str, object] = {"cursors": cursors}
            if start + size < len(ids):
                paging["next"] = str(request.url.include_query_params(limit=size, after=cursors["after"]))
            body["paging"] = paging
        return JSONResponse(body)

    def _page_token(self, user_value: str, user: IssuedToken, page_id: str) -> str:
        # From a long-lived user token, Page tokens do not expire by time; otherwise they die with the user's.
        key = (user_value, page_id)
        if key not in self._page_tokens:
            self._page_tokens[key] = self._issue_facebook(
                kind="PAGE", scopes=user.scopes, page_id=page_id,
                expires_at=None if user.long_lived else user.expires_at)
        return self._page_tokens[key]

    async def facebook_debug_token(self, request: Request) -> Response:
        q = request.query_params
        app_token = f"{self.config.facebook_app_id}|{self.config.facebook_app_secret}"
        if not _same(q.get("access_token"), app_token):
            return _graph_error("Invalid OAuth access token signature.", code=190)
        token = self.tokens.get(q.get("input_token", ""))
        if token is None or token.provider != "facebook":
            error = {"code": 190, "message": _UNPARSEABLE}
            return JSONResponse({"data": {"error": error, "is_valid": False}})
        data_access = token.data_access_expires_at or token.issued_at + FACEBOOK_DATA_ACCESS_TTL
        data: dict[str, object] = {
            "app_id": self.config.facebook_app_id, "type": token.kind, "application": self.config.app_name,
            "data_access_expires_at": int(data_access), "expires_at": int(token.expires_at or 0),
            "issued_at": int(token.issued_at), "is_valid": self._alive(token), "scopes": token.scopes,
            "granular_scopes": self._granular_scopes(token), "user_id": token.owner,
        }
        if token.page_id is not None:
            data["profile_id"] = token.page_id
        if token.revoked:
            data["error"] = {"code": 190, "message": _REVOKED, "subcode": token.revoked_subcode}
        elif not self._alive(token):
            data["error"] = {"code": 190, "message": _EXPIRED, "subcode": 463}
        return JSONResponse({"data": data})

    def _granular_scopes(self, token: IssuedToken) -> list[dict[str, object]]:
        """Per-Page permissions name the Pages they cover (target_ids): all the user's, less those withheld."""
        pages = [page_id for page_id, _ in self.config.pages]
        found: list[dict[str, object]] = []
        for scope in token.scopes:
            if scope not in PAGE_SCOPES:
                found.append({"scope": scope})
                continue
            targets = [page_id for page_id in pages if page_id not in self.withheld.get(scope, set())]
            if targets:
                found.append({"scope": scope, "target_ids": targets})
        return found

    # --- Disconnecting: apps giving up their access, and the consent pages' look ---------------------
    # (The connections page's side of the stand-ins: kept together, apart from the OAuth and API parts.)

    def _disconnect_routes(self) -> list[Route]:
        r = self._route
        return [
            r("/shopify/{shop}/admin/api_permissions/current.json", self.shopify_revoke, "DELETE",
              "shopify.revoke"),
            r("/graph/{version}/{user_id}/permissions", self.facebook_revoke, "DELETE", "facebook.revoke"),
            r("/revocations", self.revocations_json),
        ]

    async def shopify_revoke(self, request: Request) -> Response:
        """`DELETE /admin/api_permissions/current.json`: the app gives up its access to the shop; every
        token of the shop stops working. (Shopify then sends app/uninstalled; the stand-in does not, its
        demo button does.)"""
        shop = request.path_params["shop"]
        if not self._admin_token_valid(request, shop):
            return JSONResponse({"errors": _SHOPIFY_401}, status_code=401)
        self.revoke_shopify(shop)
        self.revocations.append(Revocation("shopify", shop, self.clock()))
        return JSONResponse({})

    async def facebook_revoke(self, request: Request) -> Response:
        """`DELETE /{user-id}/permissions` with the user's token: the app is removed for the user, whose
        user and Page tokens die with it."""
        caller = self._graph_caller(request)
        if isinstance(caller, Response):
            return caller
        _, token = caller
        user_id = request.path_params["user_id"]
        if token.kind != "USER" or token.owner != user_id:
            return _graph_error("(#200) The access token cannot remove another user's permissions", code=200,
                                type_="OAuthException")
        for issued in self.tokens.values():
            if issued.provider == "facebook" and issued.owner == user_id:
                issued.revoked = True
        self.revocations.append(Revocation("facebook", user_id, self.clock()))
        return JSONResponse({"success": True})

    async def revocations_json(self, request: Request) -> Response:
        """What apps gave up so far, for a test driving the demo from another process."""
        return JSONResponse([{"provider": r.provider, "subject": r.subject, "at": r.at} for r in self.revocations])

    def _consent_page(self, provider: str, title: str, body: str) -> HTMLResponse:
        """A consent page in the app's own stylesheet, saying plainly that it is a local stand-in."""
        style = ""
        if self.config.service_base_url:
            href = html.escape(self.config.service_base_url.rstrip("/") + "/static/app.css")
            style = f'<link rel="stylesheet" href="{href}">'
        banner = (f'<p class="stand-in" role="note"><strong>Local stand-in for {html.escape(provider)}.</strong> '
                  f"This page is served by salesbot's demo, not by {html.escape(provider)}.</p>")
        return HTMLResponse(
            f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)} (stand-in)</title>{style}</head>"
            f"<body>{banner}<main>{body}</main></body></html>",
            headers=PAGE_HEADERS,
        )

    async def facebook_send(self, request: Request) -> Response:
        """The Send API: a Page token with its proof, a recipient and a text; what was sent is recorded."""
        caller = self._graph_caller(request)
        if isinstance(caller, Response):
            return caller
        _, token = caller
        if token.kind != "PAGE" or token.page_id is None:
            return _graph_error("(#230) Requires pages_messaging permission to manage the object", code=230)
        try:
            payload = json.loads(await request.body())
        except ValueError:
            payload = None
        recipient = payload.get("recipient") if isinstance(payload, dict) else None
        message = payload.get("message") if isinstance(payload, dict) else None
        psid = recipient.get("id") if isinstance(recipient, dict) else None
        text = message.get("text") if isinstance(message, dict) else None
        if not isinstance(psid, str) or not psid:
            return _graph_error("(#100) The parameter recipient is required", code=100)
        if not isinstance(text, str) or not text:
            return _graph_error("(#100) The parameter message must have a text or an attachment", code=100)
        self.messages.append(MessengerMessage("out", token.page_id, psid, text))
        return JSONResponse({"recipient_id": psid, "message_id": f"m_{_random(24)}"})

    async def messenger_page(self, request: Request) -> Response:
        """The conversations the demo had, as a shopper would see them in Messenger."""
        names = dict(self.config.pages)
        def who(m: MessengerMessage) -> str:
            return names.get(m.page_id, m.page_id) if m.direction == "out" else f"Shopper {m.psid}"

        rows = "".join(f'<li class="{m.direction}"><b>{html.escape(who(m))}</b>: {html.escape(m.text)}</li>'
                       for m in self.messages)
        return _page("Messenger (sandbox)", f'<h1>Messenger (sandbox)</h1><ol id="messages">{rows}</ol>'
                     '<p><a href="/">Back to the service</a></p>')
