"""Real HTTP on loopback for reliability tests: the sandbox under uvicorn in a thread, the app in-process.

Client timeouts only apply over real sockets (httpx.ASGITransport never times out), and a dropped
connection is only a dropped connection under a real server; so here the app's outgoing client talks
to the sandbox over 127.0.0.1, while the browser reaches the app itself through ASGI (fast, one jar).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import uvicorn

from salesbot_sandbox import Sandbox, SandboxConfig
from service.app import create_app
from service.settings import Settings
from service.vault import TokenStore
from tests.conftest import base_environ
from tests.web import FACEBOOK_APP_ID, FACEBOOK_SECRET, NO_SWEEP, SHOPIFY_KEY, SHOPIFY_SECRET

APP = "http://testserver"


@contextmanager
def serve_in_thread(app: object, *, graceful: float = 1.0) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in a daemon thread; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,  # uvicorn's records propagate to the root logger (and so to caplog)
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=graceful,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the loopback server did not start")
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class LoopbackOnly(httpx.AsyncBaseTransport):
    """The app's outgoing transport: real HTTP, to the one allowed origin only; records every URL."""

    def __init__(self, allowed: str) -> None:
        self.allowed = urlsplit(allowed).netloc
        self.inner = httpx.AsyncHTTPTransport()
        self.urls: list[httpx.URL] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(request.url)
        if request.url.netloc.decode() != self.allowed:
            raise httpx.ConnectError("tests allow outbound requests to the sandbox only")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def sandbox_for(service_base_url: str = APP) -> Sandbox:
    return Sandbox(
        SandboxConfig(
            shopify_api_key=SHOPIFY_KEY,
            shopify_api_secret=SHOPIFY_SECRET,
            facebook_app_id=FACEBOOK_APP_ID,
            facebook_app_secret=FACEBOOK_SECRET,
            service_base_url=service_base_url,
        )
    )


def live_environ(sandbox_url: str, app_url: str = APP, **overrides: str) -> dict[str, str]:
    return {
        "SHOPIFY_API_KEY": SHOPIFY_KEY,
        "SHOPIFY_API_SECRET": SHOPIFY_SECRET,
        "SHOPIFY_REDIRECT_URI": f"{app_url}/shopify/callback",
        "SHOPIFY_SCOPES": "read_products,read_orders",
        "SHOPIFY_ADMIN_BASE_URL": f"{sandbox_url}/shopify/{{shop}}",
        "FACEBOOK_APP_ID": FACEBOOK_APP_ID,
        "FACEBOOK_APP_SECRET": FACEBOOK_SECRET,
        "FACEBOOK_REDIRECT_URI": f"{app_url}/facebook/callback",
        "FACEBOOK_DIALOG_BASE_URL": f"{sandbox_url}/facebook",
        "FACEBOOK_GRAPH_BASE_URL": f"{sandbox_url}/graph",
        **overrides,
    }


@dataclass
class LiveWeb:
    settings: Settings
    sandbox: Sandbox
    sandbox_url: str
    store: TokenStore
    outbound: LoopbackOnly
    app: object
    browsers: list[httpx.AsyncClient] = field(default_factory=list, repr=False)

    def new_browser(self) -> httpx.AsyncClient:
        """A browser with its own cookie jar: the app and the sandbox's pages over ASGI. (Only the app's own
        client talks to the sandbox over loopback HTTP: that is where timeouts and drops must be real, and
        the log records of HTTP plumbing in this process are then the app's alone.)"""
        browser = httpx.AsyncClient(
            mounts={
                APP: httpx.ASGITransport(app=self.app),  # type: ignore[arg-type]
                self.sandbox_url: httpx.ASGITransport(app=self.sandbox.app),
            },
            base_url=APP,
            follow_redirects=True,
            timeout=10.0,
        )
        self.browsers.append(browser)
        return browser


@asynccontextmanager
async def live_app(
    database_url: str,
    *,
    client_timeout: float = 0.5,
    environ: dict[str, str] | None = None,
    sweep_every: float = NO_SWEEP,
    **overrides: str,
) -> AsyncIterator[LiveWeb]:
    sandbox = sandbox_for()
    with serve_in_thread(sandbox.app) as sandbox_url:
        settings = Settings.from_environ(
            {
                **base_environ(DATABASE_URL=database_url, HTTP_TIMEOUT_SECONDS=str(client_timeout)),
                **live_environ(sandbox_url, **overrides),
                **(environ or {}),
            },
            env_file=None,
        )
        outbound = LoopbackOnly(sandbox_url)
        http = httpx.AsyncClient(transport=outbound, timeout=httpx.Timeout(settings.http_timeout_seconds))
        app = create_app(settings, http_client=http, sweep_every=sweep_every)
        async with app.router.lifespan_context(app):
            web = LiveWeb(settings, sandbox, sandbox_url, app.state.services.store, outbound, app)
            try:
                yield web
            finally:
                for browser in web.browsers:
                    await browser.aclose()
                await http.aclose()
