"""The outermost middleware: every request gets an id (its X-Request-ID when it is a plain token, else a
new one), carried by every log line it causes and sent back in X-Request-ID; and it is counted by
route template, method and status, and timed (service/metrics.py). The vault's cache counts are handed
to the metrics as each request ends."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.logs import accept_request_id, request_id

UNMATCHED = "unmatched"  # no route: one label for every path nobody serves, so scans cannot add labels


def route_template(scope: Scope, root_path: str) -> str:
    """`/shopify/{shop}/login`, never `/shopify/acme/login`: the template of the route that answered."""
    route = scope.get("route")
    if route is None or not hasattr(route, "path"):
        return UNMATCHED
    if isinstance(route, Mount):  # a mounted app without routes of its own (the stylesheet's folder)
        return route.path + "/{path}"
    mounted = scope.get("root_path", "")[len(root_path) :]  # the Mount's prefix, when a mounted router answered
    return mounted + route.path


class Observe:
    def __init__(self, app: ASGIApp, *, cache_stats: Callable[[], dict[str, int] | None] = lambda: None) -> None:
        self.app = app
        self._cache_stats = cache_stats
        self._cache_counts = metrics.CacheCounts()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"x-request-id"), None)
        current = accept_request_id(given)
        token = request_id.set(current)
        root_path = scope.get("root_path", "")
        status = 500
        began = time.perf_counter()

        async def with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = current
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        finally:
            route = route_template(scope, root_path)
            metrics.http_requests.labels(route, scope["method"], str(status)).inc()
            metrics.http_seconds.labels(route).observe(time.perf_counter() - began)
            stats = self._cache_stats()
            if stats is not None:
                self._cache_counts.flush(stats)
            request_id.reset(token)
