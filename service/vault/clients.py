"""A store's HTTP side: the client Shopify refreshes go through, and the pool the bot's clients share.

A store opened in any process (not only the web app) can refresh Shopify tokens and hand out API
clients from settings alone: it builds what it was not given on first use and closes it with itself.
"""

from __future__ import annotations

import httpx

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

    def client(self, *, base_url: str, auth: httpx.Auth) -> httpx.AsyncClient:
        """A client for the bot: its base URL and auth, on the shared pool (cheap to make per use)."""
        return httpx.AsyncClient(base_url=base_url, auth=auth, transport=self._transport(), timeout=self.timeout)

    def shopify_base_url(self, domain: str) -> str:
        base = admin_base_url(self.settings.shopify_admin_base_url, domain)
        return f"{base}/admin/api/{self.settings.shopify_api_version}/"

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
