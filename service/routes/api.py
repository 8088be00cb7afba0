"""The HTTP API under /api/v1 (docs/api.md; DESIGN.md, "The HTTP API"): connections and health for bots in
any language, and two proxies that make the provider call so that a bot never holds a token.

Every request carries `Authorization: Bearer <key>` (service/api_keys.py), checked against the database
each time. A `read` key gets tokens; a `proxy` key gets health and the proxies, never a token. Errors are
the service's codes as JSON (routes/common.py answers JSON for any path under /api/). No session, no CSRF
(nothing here is a form a browser sends), no CORS.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import api_keys, keys
from service.api_keys import PROXY, READ, Caller
from service.errors import (
    ApiKeyRefused,
    InvalidInput,
    NotFound,
    OwnedElsewhere,
    ProviderUnavailable,
    RateLimited,
    ScopeMissing,
)
from service.models import utcnow
from service.openapi import DOCUMENT
from service.providers.shopify import SHOP_SUFFIX
from service.routes.common import read_body, services
from service.vault import health

PREFIX = "/api/v1"
MAX_BODY_BYTES = 256 * 1024  # a GraphQL query or a Send API message is a few KiB
# Providers' answers are handed on as they came: only these headers go with them.
_PASSED_HEADERS = ("content-type", "retry-after", "x-shopify-shop-api-call-limit")


class Limiter:
    """Each key's requests a minute (API_RATE_PER_MINUTE), in this process: a bucket that holds a minute's
    requests and refills evenly, so a burst up to the limit passes and a steady rate above it does not."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # prefix -> (tokens, when)

    def wait(self, prefix: str) -> float:
        """0 when the request may go (and it is counted); else the seconds until one may."""
        now = self.clock()
        tokens, then = self._buckets.get(prefix, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens >= 1:
            self._buckets[prefix] = (tokens - 1, now)
            return 0.0
        self._buckets[prefix] = (tokens, now)
        return (1 - tokens) / self.rate


async def _caller(request: Request, *, scopes: tuple[str, ...]) -> Caller:
    """The request's key, checked, limited and counted; refused as the API says (401, 429, 403)."""
    app = services(request)
    authorization = request.headers.get("authorization")
    caller = await api_keys.check(app.store, authorization)
    if caller is None:
        given = bool(authorization)
        said = "is wrong or revoked" if given else "is missing"
        raise ApiKeyRefused(
            f"The API key {said}: send `Authorization: Bearer <key>` with a key from `salesbot api-keys create`.",
            given=given,
        )
    wait = app.api_limiter.wait(caller.prefix)
    if wait:
        raise RateLimited(
            f"This API key made more than {app.settings.api_rate_per_minute} requests a minute (API_RATE_PER_MINUTE).",
            retry_after=wait,
        )
    app.api_usage.note(caller.prefix)
    if caller.scope not in scopes:
        raise ScopeMissing(f"A {caller.scope} key cannot call this; it needs a {' or '.join(scopes)} key.")
    return caller


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def _health(assessed: health.Health) -> dict[str, Any]:
    return assessed.as_dict()


def _same_account(request: Request, account: str | None, what: str) -> None:
    """`?account=UUID`: the account the bot acts for. A connection of another account is refused (409),
    as the account rule refuses to join it (DESIGN.md, "Accounts")."""
    wanted = request.query_params.get("account")
    if wanted is not None and wanted != account:
        raise OwnedElsewhere(f"{what} belongs to another account than the one `?account=` gives.")


def _page_id(request: Request) -> str:
    page_id = request.path_params["page_id"]
    if not page_id.isascii() or not page_id.isdigit() or len(page_id) > 64:
        raise NotFound("A Page id is the Page's number; no Page has this id.")
    return str(page_id)


async def page(request: Request) -> Response:
    caller = await _caller(request, scopes=(READ, PROXY))
    page_id = _page_id(request)
    found = await services(request).store.page_connection(page_id)
    if found is None:
        raise NotFound(f"No token is stored for Page {page_id}: it is not connected.")
    _same_account(request, found.account, f"Page {page_id}")
    body: dict[str, Any] = {
        "page_id": found.page_id,
        "name": found.name,
        "account": found.account,
        "shop": found.shop,
        **_health(found.assessment),
        "expires_at": _iso(found.expires_at),
    }
    if caller.scope == READ:
        body["token"] = found.token
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def shop(request: Request) -> Response:
    caller = await _caller(request, scopes=(READ, PROXY))
    store = services(request).store
    # The token is valid now (refreshed first when due), whichever key asks: the health then says so too.
    found = await store.shop_connection(request.path_params["shop"])
    if found is None:
        raise NotFound(f"No token is stored for {request.path_params['shop']}: the app is not installed there.")
    _same_account(request, found.account, found.shop)
    body: dict[str, Any] = {
        "shop": found.shop,
        "account": found.account,
        "page_ids": list(found.page_ids),
        **_health(found.assessment),
        "expires_at": _iso(found.expires_at),
    }
    if caller.scope == READ:
        body["token"] = found.token
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def account(request: Request) -> Response:
    await _caller(request, scopes=(READ, PROXY))
    try:
        account_id = str(uuid.UUID(request.path_params["account"]))
    except ValueError:
        raise NotFound("An account is a UUID; no account has this id.") from None
    records = await services(request).store.account_tokens(account_id)
    now = utcnow()
    shops, pages = [], []
    for record in sorted(records, key=lambda r: (r.created_at or now, r.key)):
        kind = health.kind_of(record.key)
        if record.type != "token" or kind not in (health.SHOP, health.PAGE):
            continue
        entry = {"name": record.name, **_health(health.of_record(record, now)), "expires_at": _iso(record.expires_at)}
        subject = keys.describe_key(record.key).subject  # type: ignore[union-attr]
        if kind == health.SHOP:
            shops.append({"shop": subject + SHOP_SUFFIX} | entry)
        else:
            pages.append({"page_id": subject} | entry)
    if not shops and not pages:
        raise NotFound(f"Account {account_id} has no connections.")
    return JSONResponse({"account": account_id, "shops": shops, "pages": pages}, headers={"Cache-Control": "no-store"})


async def _forward(request: Request, call: Callable[[bytes], Awaitable[httpx.Response]], provider: str) -> Response:
    too_large = InvalidInput("The body is larger than 256 KiB.", status_code=413)
    body = await read_body(request, limit=MAX_BODY_BYTES, too_large=lambda: too_large)
    try:
        json.loads(body)
    except ValueError:
        raise InvalidInput("The body must be JSON, as the provider takes it.") from None
    try:
        answer = await call(body)
    except httpx.TimeoutException:
        raise ProviderUnavailable(f"{provider} did not answer in time.") from None
    except httpx.TransportError:
        raise ProviderUnavailable(f"{provider} could not be reached.") from None
    headers = {name: answer.headers[name] for name in _PASSED_HEADERS if name in answer.headers}
    headers["Cache-Control"] = "no-store"
    return Response(answer.content, status_code=answer.status_code, headers=headers)


async def shop_graphql(request: Request) -> Response:
    await _caller(request, scopes=(PROXY,))
    store = services(request).store
    name = request.path_params["shop"]
    if "account" in request.query_params:
        found = await store.shop_connection(name)
        if found is None:
            raise NotFound(f"No token is stored for {name}: the app is not installed there.")
        _same_account(request, found.account, found.shop)

    async def call(body: bytes) -> httpx.Response:
        async with store.shopify_client(name) as client:
            return await client.post("graphql.json", content=body, headers={"content-type": "application/json"})

    return await _forward(request, call, "Shopify")


async def page_messages(request: Request) -> Response:
    await _caller(request, scopes=(PROXY,))
    store = services(request).store
    page_id = _page_id(request)
    if "account" in request.query_params:
        found = await store.page_connection(page_id)
        if found is None:
            raise NotFound(f"No token is stored for Page {page_id}: it is not connected.")
        _same_account(request, found.account, f"Page {page_id}")

    async def call(body: bytes) -> httpx.Response:
        async with store.graph_client(page_id) as client:
            return await client.post("me/messages", content=body, headers={"content-type": "application/json"})

    return await _forward(request, call, "Facebook")


async def openapi(request: Request) -> Response:
    # The document is public, like any API reference: it holds no key, token or account.
    return JSONResponse(DOCUMENT)


routes = [
    Route(f"{PREFIX}/openapi.json", openapi, methods=["GET"]),
    Route(f"{PREFIX}/pages/{{page_id}}", page, methods=["GET"]),
    Route(f"{PREFIX}/pages/{{page_id}}/messages", page_messages, methods=["POST"]),
    Route(f"{PREFIX}/shops/{{shop}}", shop, methods=["GET"]),
    Route(f"{PREFIX}/shops/{{shop}}/graphql", shop_graphql, methods=["POST"]),
    Route(f"{PREFIX}/accounts/{{account}}", account, methods=["GET"]),
]
