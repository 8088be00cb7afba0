"""The outcomes an operator follows, each one log line (service/logs.py) and one count (service/metrics.py):
connections made and refused, webhooks acted on and refused. Names and codes only, never a value."""

from __future__ import annotations

import logging
from typing import Any

from service import keys, metrics
from service.logs import event

logger = logging.getLogger("salesbot")
# A callback that someone forged, replayed or held back: worth an operator's attention.
FORGED_OR_STALE = frozenset(
    {"invalid_hmac", "stale_timestamp", "invalid_state", "invalid_callback", "invalid_signed_request", "csrf_failed"}
)
# What a merchant did or chose: normal outcomes.
MERCHANT_CHOICES = frozenset({"access_denied"})
CALLBACKS = {"/shopify/callback": keys.SHOPIFY, "/facebook/callback": keys.FACEBOOK, "/facebook/pages": keys.FACEBOOK}
WEBHOOKS = {
    "/shopify/webhooks": keys.SHOPIFY,
    "/facebook/deauthorize": keys.FACEBOOK,
    "/facebook/data-deletion": keys.FACEBOOK,
}


def connected(provider: str, **fields: Any) -> None:
    """`shopify.connected shop=… account=…`, `facebook.connected user=… pages=… account=…`."""
    metrics.oauth_outcomes.labels(provider, "connected").inc()
    event(logger, f"{provider}.connected", **fields)


def refused(provider: str, code: str) -> None:
    """`oauth.refused provider=… code=…`: WARNING when forged or stale, INFO when the merchant chose it."""
    metrics.oauth_outcomes.labels(provider, code).inc()
    level = logging.INFO if code in MERCHANT_CHOICES else logging.WARNING
    event(logger, "oauth.refused", level=level, provider=provider, code=code)


def webhook(name: str, **fields: Any) -> None:
    """`webhook.uninstalled shop=…`, `webhook.deauthorized user=…` ...: what a provider told us, acted on."""
    event(logger, f"webhook.{name}", **fields)


SHOPIFY_TOPICS = {
    "app/uninstalled": "uninstalled",
    "shop/redact": "shop_redacted",
    "customers/redact": "customers_redacted",
    "customers/data_request": "customers_data_requested",
}


def shopify_webhook(topic: str, *, shop: str | None, status: str, deleted: int) -> None:
    webhook(SHOPIFY_TOPICS.get(topic, "ignored"), shop=shop, status=status, deleted=deleted)


def failed(path: str, code: str) -> None:
    """A ServiceError answered on `path`: an OAuth callback's or a webhook's is an outcome of its own."""
    if path in CALLBACKS:
        refused(CALLBACKS[path], code)
    elif path in WEBHOOKS:
        event(logger, "webhook.refused", level=logging.WARNING, provider=WEBHOOKS[path], code=code)
