"""Security headers on every response of the app (and of what it mounts: the demo's /sandbox and /bot).

- `X-Content-Type-Options: nosniff` everywhere: a browser never reads JSON or CSS as something else.
- HTML pages get a Content-Security-Policy that allows what they use and nothing more: no scripts, the
  one stylesheet of our own, forms to ourselves, no framing. `form-action` also holds the origins a
  form's redirects lead to, since browsers check it on each: the Shopify connect form (GET
  /shopify/login) goes on to the redirect URI's host (CanonicalHost) and then to the shop's consent page.
- Anything else gets `default-src 'none'; frame-ancestors 'none'`.
A response that already carries a policy (the stand-ins' pages) keeps its own.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.settings import Settings

NOT_HTML_POLICY = "default-src 'none'; frame-ancestors 'none'"


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


def page_policy(settings: Settings) -> str:
    """The policy of our HTML pages, built from where the settings say the connect flow goes."""
    # "https://{shop}" names every shop's host: "https://*.myshopify.com" in a policy.
    admin = _origin(settings.shopify_admin_base_url.replace("{shop}", "*.myshopify.com"))
    targets = ["'self'"]
    for origin in (_origin(settings.shopify_redirect_uri), admin):
        if origin is not None and origin not in targets:
            targets.append(origin)
    return "; ".join(
        (
            "default-src 'none'",
            "style-src 'self'",
            f"form-action {' '.join(targets)}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        )
    )


class SecurityHeaders:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.page_policy = page_policy(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                html = headers.get("content-type", "").startswith("text/html")
                headers.setdefault("Content-Security-Policy", self.page_policy if html else NOT_HTML_POLICY)
            await send(message)

        await self.app(scope, receive, with_headers)
