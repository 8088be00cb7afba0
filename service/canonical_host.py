"""Send a browser that reached a login route on another host name to the host of the redirect URIs.

The browser-binding cookie is per host: a flow started on `localhost` and called back on `127.0.0.1`
arrives without it and ends in `invalid_state`. So before a flow starts, a request whose Host differs
from the provider's redirect URI is redirected there (once: `host_checked=1` marks the redirect, so a
proxy that does not pass the Host header cannot cause a loop; it gets a warning instead). DESIGN.md, "OAuth".
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import Headers
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.settings import Settings

logger = logging.getLogger("salesbot")
MARK = "host_checked"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SHOPIFY_LOGIN = re.compile(r"^/shopify/(?:[^/]+/)?login$")


def _origin(scheme: str, netloc: str) -> tuple[str, int | None]:
    """(host, port) as a browser would count them: case-insensitive, the scheme's default port filled in."""
    parts = urlsplit(f"{scheme}://{netloc}")
    try:
        port = parts.port
    except ValueError:  # a Host header with a port that is not a number: it matches nothing
        port = -1
    return parts.hostname or "", port or _DEFAULT_PORTS.get(scheme)


class CanonicalHost:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def _redirect_uri(self, path: str) -> str | None:
        if path == "/facebook/login":
            return self.settings.facebook_redirect_uri
        if _SHOPIFY_LOGIN.match(path):
            return self.settings.shopify_redirect_uri
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        uri = self._redirect_uri(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        if uri is not None:
            wanted = urlsplit(uri)
            host = Headers(scope=scope).get("host", "")
            if host and _origin(wanted.scheme, host) != _origin(wanted.scheme, wanted.netloc):
                query = scope.get("query_string", b"").decode("latin-1")
                if f"{MARK}=1" in query.split("&"):
                    logger.warning(
                        "Requests reach %s with Host %r, not %r (SHOPIFY_/FACEBOOK_REDIRECT_URI): a reverse proxy "
                        "must pass the Host header, or the sign-in cookie is lost.",
                        scope["path"],
                        host,
                        wanted.netloc,
                    )
                else:
                    query = f"{query}&{urlencode({MARK: 1})}" if query else urlencode({MARK: 1})
                    target = f"{wanted.scheme}://{wanted.netloc}{scope['path']}?{query}"
                    await RedirectResponse(target, status_code=307)(scope, receive, send)
                    return
        await self.app(scope, receive, send)
