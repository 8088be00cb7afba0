"""httpx.Auth for the bot's clients: the token on every request, renewed and retried as each provider
documents (docs/providers.md). The tokens come from callables, so this module knows no vault.

- ShopifyAuth: `X-Shopify-Access-Token`; a 401 gets one refresh and one retry; a throttled answer
  (GraphQL `THROTTLED`, or HTTP 429) is waited out once, for as long as Shopify says.
- GraphAuth: the Page token and its `appsecret_proof` as parameters; error 190 reports the token dead;
  rate-limit answers raise RateLimited with the wait Graph states.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Any

import httpx

from service import errors
from service.providers.facebook import appsecret_proof, graph_error, refusal_detail, token_problem
from service.providers.http import parse_json

# A wait longer than this is handed to the caller (RateLimited) rather than slept through in a request.
MAX_WAIT_SECONDS = 10.0
# Shopify's 429 without a Retry-After (it always sends one, as documented): its bucket leaks in a second.
DEFAULT_RETRY_SECONDS = 1.0
# Graph's rate-limit error codes: app, user, Page, API-specific, and the business use case range.
GRAPH_RATE_LIMITS = frozenset({4, 17, 32, 613, *range(80001, 80015)})
_LONGEST_STATED_WAIT = 24 * 3600.0  # anything longer is not a wait we believe


class ShopifyAuth(httpx.Auth):
    """Authenticates an Admin API client for one shop. Answers are read whole (the throttle is in the
    JSON body of an HTTP 200), so these clients do not stream.

    token(refused) returns the shop's working token; given the token Shopify just refused, it returns
    a new one (refreshed, or one another caller stored meanwhile)."""


    def __init__(
        self,
        shop: str,
        token: Callable[[str | None], Awaitable[str]],
        *,
        max_wait: float = MAX_WAIT_SECONDS,
        dead: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self.shop = shop
        self._token = token
        self.max_wait = max_wait
        self._dead = dead  # awaited with a renewed token Shopify refused as well

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("ShopifyAuth works with httpx.AsyncClient only")
        yield request  # pragma: no cover -- makes this a generator, as httpx expects

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._token(None)
        request.headers["X-Shopify-Access-Token"] = token
        response = yield request
        await response.aread()
        if response.status_code == 401:
            renewed = await self._token(token)
            request.headers["X-Shopify-Access-Token"] = renewed
            response = yield request
            await response.aread()
            if response.status_code == 401:
                if self._dead is not None:
                    await self._dead(renewed)
                raise errors.TokenRevoked(
                    f"Shopify refused the token of {self.shop} again after renewing it (401): "
                    "the app may have been uninstalled; install it again.",
                    reason="token_refused",
                )
        wait = shopify_throttle_wait(response)
        if wait is None:
            return
        if wait > self.max_wait:
            raise errors.RateLimited(f"Shopify throttles {self.shop}: wait {wait:.1f} s.", retry_after=wait)
        await asyncio.sleep(wait)  # Shopify's own figure: its bucket refills at a stated rate
        response = yield request
        await response.aread()
        wait = shopify_throttle_wait(response)
        if wait is not None:
            raise errors.RateLimited(
                f"Shopify still throttles {self.shop} after one wait: wait {wait:.1f} s.", retry_after=wait
            )


class GraphAuth(httpx.Auth):
    """Authenticates a Graph API client for one Page.

    token() returns the Page token; dead(token, reason) is awaited when Graph says that token is invalid
    (190, or 102), with the reason its subcode names (providers/facebook.py, token_problem)."""

    def __init__(
        self,
        page_id: str,
        token: Callable[[], Awaitable[str]],
        app_secret: str,
        dead: Callable[[str, str], Awaitable[object]],
    ) -> None:
        self.page_id = page_id
        self._token = token
        self._secret = app_secret
        self._dead = dead

    def __repr__(self) -> str:
        return f"GraphAuth(page_id={self.page_id!r})"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("GraphAuth works with httpx.AsyncClient only")
        yield request  # pragma: no cover

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._token()
        # With "Require App Secret" on, Graph refuses a Page token that comes without its proof.
        request.url = request.url.copy_merge_params(
            {"access_token": token, "appsecret_proof": appsecret_proof(token, self._secret)}
        )
        response = yield request
        await response.aread()
        code, subcode = graph_error(parse_json(response.content))
        problem = token_problem(code, subcode)
        if problem is not None:
            await self._dead(token, problem)
            raise errors.TokenRevoked(
                f"Facebook says the token of Page {self.page_id} is no longer valid ({refusal_detail(code, subcode)}: "
                f"{problem}); it is marked in the vault: connect the Page again.",
                reason=problem,
            )
        if response.status_code == 429 or code in GRAPH_RATE_LIMITS:
            wait = graph_usage_wait(response.headers)
            what = f"Graph error {code}" if code is not None else f"HTTP {response.status_code}"
            after = f": wait {wait:.0f} s" if wait is not None else ""
            raise errors.RateLimited(
                f"Facebook rate-limits calls for Page {self.page_id} ({what}){after}.", retry_after=wait
            )


def _number(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return min(float(value), _LONGEST_STATED_WAIT)


def retry_after(headers: httpx.Headers) -> float | None:
    """`Retry-After` in seconds (the form Shopify and Graph use), or None."""
    return _number(headers.get("retry-after"))


def shopify_throttle_wait(response: httpx.Response) -> float | None:
    """How long Shopify asks us to wait before trying again, or None when the answer is not throttled.

    HTTP 429: its Retry-After. GraphQL: HTTP 200 with an error whose extensions.code is THROTTLED; the
    wait is (requestedQueryCost - currentlyAvailable) / restoreRate from extensions.cost."""
    if response.status_code == 429:
        wait = retry_after(response.headers)
        return DEFAULT_RETRY_SECONDS if wait is None else wait
    if response.status_code != 200:
        return None
    body = parse_json(response.content)
    found = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(found, list) or not any(_throttled(error) for error in found):
        return None
    extensions = body.get("extensions")
    cost = extensions.get("cost") if isinstance(extensions, dict) else None
    status = cost.get("throttleStatus") if isinstance(cost, dict) else None
    if not isinstance(cost, dict) or not isinstance(status, dict):
        return DEFAULT_RETRY_SECONDS
    requested = _number(cost.get("requestedQueryCost"))
    available = _number(status.get("currentlyAvailable"))
    rate = _number(status.get("restoreRate"))
    if requested is None or available is None or not rate:
        return DEFAULT_RETRY_SECONDS
    return max(0.0, (requested - available) / rate)


def _throttled(error: Any) -> bool:
    extensions = error.get("extensions") if isinstance(error, dict) else None
    return isinstance(extensions, dict) and extensions.get("code") == "THROTTLED"


def graph_usage_wait(headers: httpx.Headers) -> float | None:
    """The longest `estimated_time_to_regain_access` (minutes) in X-Business-Use-Case-Usage or
    X-App-Usage, in seconds; else Retry-After; None when Graph stated no wait."""
    waits: list[float] = []
    for name in ("x-business-use-case-usage", "x-app-usage"):
        try:
            usage = json.loads(headers.get(name, "null"))
        except ValueError:
            continue
        entries: list[Any] = [usage] if isinstance(usage, dict) and "call_count" in usage else []
        if isinstance(usage, dict) and not entries:
            entries = [entry for value in usage.values() if isinstance(value, list) for entry in value]
        for entry in entries:
            minutes = _number(entry.get("estimated_time_to_regain_access")) if isinstance(entry, dict) else None
            if minutes is not None:
                waits.append(min(minutes * 60, _LONGEST_STATED_WAIT))
    if waits:
        return max(waits)
    return retry_after(headers)
