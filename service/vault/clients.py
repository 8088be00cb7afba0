"""A store's HTTP side: the client Shopify refreshes go through, and the pool the bot's clients share.

A store opened in any process (not only the web app) can refresh Shopify tokens and hand out API
clients from settings alone: it builds what it was not given on first use and closes it with itself.
Each bot client sends only under its provider's base URL (`Within`): a request or a redirect anywhere
else is refused before it is sent, so the token its auth adds never reaches another host.
"""

from __future__ import annotations

import httpx

from service.errors import ForeignHost
from service.providers.shopify import admin_base_url
from service.settings import Settings

# Idle connections kept: the bot talks to a few hosts (Shopify shops, Graph) again and again.
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class _Borrowed(httpx.AsyncBaseTransport):
    """A transport several clients share: closing one client must not close the pool under the others."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        pass  # the owner (Outbound) closes the inner transport


class Within(httpx.AsyncBaseTransport):
    """Sends only to URLs under `base` (same scheme, host and port, and under its path): every request a
    client makes passes here, redirects included, so this is the one place that keeps a token at home."""

    def __init__(self, inner: httpx.AsyncBaseTransport, base: str, provider: str) -> None:
        self.inner = inner
        self.base = httpx.URL(base)
        self.provider = provider

    def allows(self, url: httpx.URL) -> bool:
        if (url.scheme, url.host, _port(url)) != (self.base.scheme, self.base.host, _port(self.base)):
            return False
        prefix = self.base.path.rstrip("/")
        segments = url.path.split("/")
        # Dot segments ("..", or "%2e%2e" decoded) could climb out of the prefix on the server's side.
        return (url.path == prefix or url.path.startswith(prefix + "/")) and not {".", ".."} & set(segments)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.allows(request.url):
            host = request.url.host
            where = host if host.isascii() and host.isprintable() else "another host"
            raise ForeignHost(
                f"The {self.provider} client sends only to {self.base.scheme}://{self.base.netloc.decode()}"
                f"{self.base.path.rstrip('/')}/...; a request to {where} was refused before it was sent."
            )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _port(url: httpx.URL) -> int | None:
    return url.port or {"http": 80, "https": 443}.get(url.scheme)


class Outbound:
    def __init__(
        self,
        settings: Settings,
        *,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._given_client = http_client
        self._given_transport = transport
        self._own_transport: httpx.AsyncBaseTransport | None = None
        self._shared: _Borrowed | None = None
        self._own_client: httpx.AsyncClient | None = None
        self.timeout = httpx.Timeout(settings.http_timeout_seconds)

    def refresh_client(self) -> httpx.AsyncClient:
        """The client refreshes use: the one given, else one of our own (built on first use: a CLI
        command that never refreshes never pays for it)."""
        if self._given_client is not None:
            return self._given_client
        if self._own_client is None:
            self._own_client = httpx.AsyncClient(transport=self._transport(), timeout=self.timeout)
        return self._own_client

    def client(self, *, base_url: str, auth: httpx.Auth, within: str, provider: str) -> httpx.AsyncClient:
        """A client for the bot: its base URL and auth, on the shared pool (cheap to make per use), sending
        only under `within` (the provider's host, as its settings build it)."""
        transport = Within(self._transport(), within, provider)
        return httpx.AsyncClient(base_url=base_url, auth=auth, transport=transport, timeout=self.timeout)

    def shopify_admin(self, domain: str) -> str:
        """The shop's Admin host, as SHOPIFY_ADMIN_BASE_URL builds it: where its token may go."""
        return admin_base_url(self.settings.shopify_admin_base_url, domain)

    def shopify_base_url(self, domain: str) -> str:
        return f"{self.shopify_admin(domain)}/admin/api/{self.settings.shopify_api_version}/"

    def graph_base_url(self) -> str:
        return f"{self.settings.facebook_graph_base_url}/{self.settings.facebook_graph_version}/"

    def _transport(self) -> _Borrowed:
        if self._shared is None:
            if self._given_transport is None:
                self._own_transport = httpx.AsyncHTTPTransport(limits=LIMITS)
            self._shared = _Borrowed(self._given_transport or self._own_transport)  # type: ignore[arg-type]
        return self._shared

    async def aclose(self) -> None:
        if self._own_client is not None:
            await self._own_client.aclose()
            self._own_client = None
        if self._own_transport is not None:
            await self._own_transport.aclose()  # a transport we were given stays its owner's to close
            self._own_transport = None
        self._shared = None
