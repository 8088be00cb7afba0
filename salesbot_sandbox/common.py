"""What every stand-in shares: the providers' documented constants and lifetimes, the records of what
was issued and asked, the faults a test can inject, and small helpers for answers and pages."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
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

SHOP_RE = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
ALNUM = string.ascii_letters + string.digits
REVOKED = (
    "Error validating access token: The session has been invalidated because the user changed their "
    "password or Facebook has changed the session for security reasons."
)
EXPIRED = "Error validating access token: Session has expired."
UNPARSEABLE = "Invalid OAuth access token - Cannot parse access token"
SHOPIFY_401 = "[API] Invalid API key or access token (unrecognized login or wrong password)"


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

COMMON_FAULTS = {"status_500", "malformed_json", "missing_fields", "slow", "drop"}
FAULTS_FOR = {
    "shopify.approve": {"status_500", "slow", "drop", "scopes_reduced"},
    "shopify.access_token": COMMON_FAULTS | {"scopes_reduced"},
    "shopify.shop": COMMON_FAULTS,
    "shopify.graphql": COMMON_FAULTS | {"throttled", "status_429", "status_401"},
    "facebook.access_token": COMMON_FAULTS | {"graph_190"},
    "facebook.me": COMMON_FAULTS | {"graph_190"},
    "facebook.accounts": COMMON_FAULTS | {"graph_190"},
    "facebook.debug_token": COMMON_FAULTS | {"graph_190"},
    "shopify.revoke": {"status_500", "slow", "drop"},
    "facebook.revoke": {"status_500", "slow", "drop", "graph_190"},
    "facebook.messages": COMMON_FAULTS | {"graph_190", "rate_limited"},
}
MISSING_FIELDS = {  # valid JSON, 200, without the field a client needs
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
        if endpoint not in FAULTS_FOR:
            raise ValueError(f"Unknown fault endpoint {endpoint!r}; known: {', '.join(sorted(FAULTS_FOR))}")
        if kind not in FAULTS_FOR[endpoint]:
            allowed = ", ".join(sorted(FAULTS_FOR[endpoint]))
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


def fault_response(endpoint: str, kind: str) -> Response | None:
    if kind == "status_500":
        if endpoint.startswith("facebook."):
            return graph_error("An unexpected error has occurred. Please retry your request later.",
                                code=2, status=500)
        return JSONResponse({"errors": "Internal Server Error"}, status_code=500)
    if kind == "malformed_json":
        return Response('{"access_token": ', media_type="application/json")
    if kind == "missing_fields":
        return JSONResponse(MISSING_FIELDS[endpoint])
    if kind == "graph_190":
        return graph_error(REVOKED, code=190, subcode=460)
    if kind == "drop":
        return DroppedConnection()
    if kind == "status_401":
        return JSONResponse({"errors": SHOPIFY_401}, status_code=401)
    if kind == "rate_limited":
        return graph_rate_limited()
    return None  # "slow" has already slept; "scopes_reduced", "throttled", "status_429": the endpoint's


def graph_rate_limited() -> JSONResponse:
    response = graph_error("(#32) Page request limit reached", code=32)
    response.headers["X-App-Usage"] = json.dumps({"call_count": 100, "total_time": 20, "total_cputime": 10})
    usage = [{"type": "pages", "call_count": 100, "total_cputime": 10, "total_time": 20,
              "estimated_time_to_regain_access": 1}]
    response.headers["X-Business-Use-Case-Usage"] = json.dumps({"101": usage})
    return response


# --- small helpers -------------------------------------------------------------------------------


def random_text(n: int) -> str:
    return "".join(secrets.choice(ALNUM) for _ in range(n))


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def split_scopes(scope: str) -> list[str]:
    return [s.strip() for s in scope.split(",") if s.strip()]


def with_query(url: str, pairs: Sequence[tuple[str, str]], fragment: str = "") -> str:
    return url + ("&" if "?" in url else "?") + urlencode(list(pairs)) + fragment


def graph_error(message: str, *, code: int, type_: str = "OAuthException", subcode: int | None = None,
                 status: int = 400) -> JSONResponse:
    error: dict[str, object] = {"message": message, "type": type_, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = random_text(11)
    return JSONResponse({"error": error}, status_code=status)


def shopify_error(error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)


# A consent page must not be framed by another site (clickjacking an Allow), as the real ones are not.
PAGE_HEADERS = {"Content-Security-Policy": "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff"}


def html_page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"</head><body>{body}</body></html>",
        status_code=status,
        headers=PAGE_HEADERS,
    )


def hidden_fields(fields: dict[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items()
    )


def mount_prefix(request: Request) -> str:
    """The mount point (Starlette puts it in root_path), so links work under /sandbox and at the root."""
    return request.scope.get("root_path", "")


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def default_shop_name(shop: str) -> str:
    return shop.removesuffix(".myshopify.com").replace("-", " ").title()


def shop_number(shop: str) -> int:
    return int(hashlib.sha256(shop.encode()).hexdigest()[:10], 16)

