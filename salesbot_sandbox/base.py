"""The state every stand-in shares (what was issued, asked and given up) and its plumbing: routes
that record each request and apply injected faults, the catch-all 404, the consent pages' look."""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from salesbot_sandbox.common import (
    PAGE_HEADERS,
    Faults,
    IssuedCode,
    IssuedToken,
    MessengerMessage,
    RecordedRequest,
    Revocation,
    SandboxConfig,
    fault_response,
    mount_prefix,
)


class SandboxState:
    """What the stand-ins share: one token table for both providers (token strings never collide), the
    requests received, the faults queued. Each provider's stand-in is a mixin over it (see app.py)."""

    def __init__(self, config: SandboxConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.requests: list[RecordedRequest] = []
        self.faults = Faults()
        self.shopify_codes: dict[str, IssuedCode] = {}
        self.facebook_codes: dict[str, IssuedCode] = {}
        self.tokens: dict[str, IssuedToken] = {}  # both providers; token strings never collide
        self._page_tokens: dict[tuple[str, str], str] = {}  # (user token, page id) -> page token
        self.revocations: list[Revocation] = []  # what apps gave up (shopify_revoke, facebook_revoke)
        self.messages: list[MessengerMessage] = []  # the conversations, in order (GET /messenger shows them)
        self._buckets: dict[str, tuple[float, float]] = {}  # shop -> (points available, when last counted)
        self.withheld: dict[str, set[str]] = {}  # scope -> Page ids the user took it back for

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
                if (response := fault_response(fault_endpoint, fault.kind)) is not None:
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
        path, root = request.url.path, mount_prefix(request)
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

    async def revocations_json(self, request: Request) -> Response:
        """What apps gave up so far, for a test driving the demo from another process."""
        return JSONResponse([{"provider": r.provider, "subject": r.subject, "at": r.at} for r in self.revocations])

