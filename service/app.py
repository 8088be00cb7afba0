"""create_app: the routes, the middleware, and a lifespan that opens the store and the HTTP client,
prunes old rows on a schedule (service/housekeeping.py), runs the sweep (service/sweep.py), counts
connections by health (service/health_gauge.py) and delivers events to EVENTS_WEBHOOK_URL
(service/events/webhook.py).

Errors become responses in one place: a ServiceError is a page (or JSON) with its status and code;
a database that cannot be reached is 503 `database_unavailable`; anything else is a bare 500 whose log
line names the exception class and the path, nothing more (exception texts can carry URLs with codes,
or SQL parameters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import api_keys, health_gauge, housekeeping, metrics, outcomes, sweep
from service.canonical_host import CanonicalHost
from service.crypto import KeyRing
from service.db import is_unavailable
from service.errors import DatabaseUnavailable, ServiceError
from service.events import webhook
from service.headers import SecurityHeaders
from service.logs import redact_http_logs
from service.observe import Observe
from service.printable import escape_logs
from service.routes import api, disconnect, facebook, pages, shopify, status
from service.routes import metrics as metrics_route
from service.routes.common import API_PATH, Services, error_response
from service.sessions import ServerSessions
from service.settings import Settings
from service.vault import TokenStore
from service.vault.events import WEB

logger = logging.getLogger("salesbot")
STATIC = Path(__file__).resolve().parent / "static"  # the stylesheet: served by the app, no external assets
SESSION_COOKIE = "salesbot_session"
# httpcore polls every pooled connection's socket each time a request starts or ends, so each idle
# connection kept costs every request CPU (a sixth of the service's time at 32 connecting clients;
# this limit cut CPU per connect by ~13%, measured). Token calls go to many shops' hosts, so few
# idle connections would be reused anyway. Only idle ones are limited: concurrent requests still
# get a connection each.
HTTP_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=4)


def session_cookie_name(settings: Settings) -> str:
    secure_host = settings.session_cookie_secure and settings.served_over_https
    return f"__Host-{SESSION_COOKIE}" if secure_host else SESSION_COOKIE


class ContainErrors:
    """Outermost guard: an unexpected exception becomes a plain 500 and a log line without its text."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        begun = time.perf_counter()

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # Our access log: method, path and status; never the query string, which carries codes.
                logger.info(
                    "%s %s %s %.0fms",
                    scope["method"],
                    scope["path"],
                    message["status"],
                    (time.perf_counter() - begun) * 1000,
                )
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # the one place that turns anything unforeseen into a response
            if is_unavailable(exc):
                # Pooled connections are checked before use (service/db.py), so this is the database
                # itself being down or refusing: say so, and the next request tries again.
                logger.warning("database unavailable on %s %s (%s)", scope["method"], scope["path"], type(exc).__name__)
                error: ServiceError = DatabaseUnavailable("The database is not answering; try again in a moment.")
            else:
                logger.error("unhandled %s on %s %s", type(exc).__name__, scope["method"], scope["path"])
                error = ServiceError("Something went wrong on our side.")
            if not started:
                await error_response(Request(scope, receive), error)(scope, receive, tracking_send)


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    if isinstance(exc, DatabaseUnavailable):  # the vault's own, raised in place of the driver's error
        logger.warning("database unavailable on %s %s (%s)", request.method, request.scope["path"], exc.message)
    outcomes.failed(request.scope["path"], exc.code)
    return error_response(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = {404: "There is no page here.", 405: "This address does not accept that method."}.get(
        exc.status_code, "The request could not be handled."
    )
    return error_response(request, ServiceError(message, code=code, status_code=exc.status_code))


# `salesbot serve` names its settings file here for the app factory, which runs in every worker.
ENV_FILE_VARIABLE = "SALESBOT_ENV_FILE"


def app_from_environment() -> Starlette:
    """`salesbot serve`'s app factory: uvicorn calls it in each worker, which reads the settings as serve
    did (the environment, then the file serve was given, or ./.env)."""
    return create_app(Settings.load(os.environ.get(ENV_FILE_VARIABLE) or None))


def _cache_stats(app: Starlette) -> dict[str, int] | None:
    services = getattr(app.state, "services", None)
    return None if services is None else services.store.stats


def create_app(
    settings: Settings,
    *,
    http_client: httpx.AsyncClient | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    demo: Any = None,
    prune_every: float = housekeeping.PRUNE_EVERY,
    sweep_every: float = sweep.SWEEP_EVERY,
) -> Starlette:
    KeyRing.from_settings(settings)  # a bad key fails here, before anything listens
    redact_http_logs()  # httpx logs full URLs at INFO, and Graph URLs carry secrets and codes
    escape_logs()  # the access log below writes the decoded path: "%0a" must not start a forged line

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        http = http_client or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.http_timeout_seconds), follow_redirects=False, limits=HTTP_LIMITS
        )
        try:
            async with TokenStore.open(settings, http_client=http, actor=WEB) as store:
                usage = api_keys.Usage(store)
                limiter = api.Limiter(settings.api_rate_per_minute)
                app.state.services = Services(settings, store, http, store.shopify_tokens, demo, usage, limiter)
                background = [
                    asyncio.create_task(usage.flush_periodically()),  # in every process: its own counts
                    # Each of these in one process at a time across workers and instances (service/leadership.py).
                    asyncio.create_task(housekeeping.prune_periodically(store, prune_every)),
                    asyncio.create_task(sweep.sweep_periodically(store, http, sweep_every)),
                    asyncio.create_task(health_gauge.count_periodically(store)),
                ]
                try:
                    async with webhook.delivering(store, settings):  # EVENTS_WEBHOOK_URL's worker, when set
                        yield
                finally:
                    for task in background:
                        task.cancel()
                    await asyncio.gather(*background, return_exceptions=True)
        finally:
            if http_client is None:
                await http.aclose()
            metrics.process_exited(os.getpid())

    static = Mount("/static", app=StaticFiles(directory=STATIC), name="static")
    # Mounted apps (the stylesheet; in the demo, the stand-ins and the bot) never use the browser session.
    # Nor does the HTTP API: its requests carry a key, never a cookie, and get none.
    sessionless = (API_PATH, *(f"{route.path}/" for route in (static, *extra_routes) if isinstance(route, Mount)))
    app = Starlette(
        routes=[
            *status.routes,
            *shopify.routes,
            *facebook.routes,
            *pages.routes,
            *disconnect.routes,
            *api.routes,
            *(metrics_route.routes if settings.metrics_token is not None else []),
            static,
            *extra_routes,
        ],
        middleware=[
            # Outermost: the request id is on every line, and every answer (a 500 too) is counted.
            Middleware(Observe, cache_stats=lambda: _cache_stats(app)),
            Middleware(SecurityHeaders, settings=settings),  # on every response, errors included
            Middleware(ContainErrors),
            Middleware(CanonicalHost, settings=settings),
            Middleware(
                ServerSessions,
                # __Host-: only a Secure cookie for this exact host and path "/" may carry the name,
                # so a sibling domain or a plain-http response cannot plant a session of its own.
                cookie_name=session_cookie_name(settings),
                https_only=settings.session_cookie_secure,
                sessionless=sessionless,
            ),
        ],
        exception_handlers={ServiceError: _service_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    return app
