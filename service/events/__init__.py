"""Connection events for the team's own code: the kinds, and the webhook's signature (README, "Events").

Light on purpose: a receiver imports `verify_signature` from here without loading the service's
database code. The log itself is the vault's (service/vault/events.py writes it, event_log.py reads
it); the webhook worker is service/events/webhook.py.
"""

from __future__ import annotations

import hashlib
import hmac
import time

# What happened to a connection (a shop, a Page, a Facebook user), or what an operator job did.
CONNECTED = "connected"
RECONNECTED = "reconnected"
REFRESHED = "refreshed"
REFRESH_FAILED = "refresh_failed"  # a Shopify refresh got no answer (or a 5xx): the shop's cooldown began
RECOVERED = "recovered"  # back to ok: a verdict cleared, or a refresh that worked after failures
HEALTH_CHANGED = "health_changed"  # a provider's verdict: expiring_soon or needs_reconnect (vault/health.py)
MARKED_DEAD = "marked_dead"  # the provider refused the token in use: needs_reconnect
DISCONNECTED = "disconnected"
UNINSTALLED = "uninstalled"
REDACTED = "redacted"
DEAUTHORIZED = "deauthorized"
DATA_DELETED = "data_deleted"
TOKEN_SET = "token_set"
TOKEN_DELETED = "token_deleted"
IMPORTED = "imported"
RESTORED = "restored"
KEYS_ROTATED = "keys_rotated"
API_KEY_CREATED = "api_key_created"  # an HTTP API key made (`salesbot api-keys create`)
API_KEY_REVOKED = "api_key_revoked"
KINDS = (
    CONNECTED,
    RECONNECTED,
    REFRESHED,
    REFRESH_FAILED,
    RECOVERED,
    HEALTH_CHANGED,
    MARKED_DEAD,
    DISCONNECTED,
    UNINSTALLED,
    REDACTED,
    DEAUTHORIZED,
    DATA_DELETED,
    TOKEN_SET,
    TOKEN_DELETED,
    IMPORTED,
    RESTORED,
    KEYS_ROTATED,
    API_KEY_CREATED,
    API_KEY_REVOKED,
)

# Who made the change: the merchant's browser, a bot process, the health sweep, a provider's webhook,
# the operator's command line.
WEB, BOT, SWEEP, WEBHOOK, CLI = "web", "bot", "sweep", "webhook", "cli"
ACTORS = (WEB, BOT, SWEEP, WEBHOOK, CLI)

SIGNATURE_HEADER = "Salesbot-Signature"
DEFAULT_TOLERANCE = 300  # seconds: a signature older (or further ahead) than this is refused as a replay


def _mac(body: bytes, secret: str, timestamp: int) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, Stripe's scheme."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={_mac(body, secret, timestamp)}"


def verify_signature(
    body: bytes | str, header: str | None, secret: str, tolerance: int = DEFAULT_TOLERANCE, *, now: float | None = None
) -> bool:
    """True when `header` (Salesbot-Signature) signs exactly this raw body with `secret` and its time is
    within `tolerance` seconds of now. Check it before reading the body; de-duplicate on the event's id."""
    if not header:
        return False
    raw = body.encode() if isinstance(body, str) else bytes(body)
    timestamps, signatures = [], []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not timestamps[0].isascii() or not timestamps[0].isdigit() or not signatures:
        return False
    timestamp = int(timestamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = _mac(raw, secret, timestamp)
    # Every v1 is compared (a sender rotating its secret may send two); constant time each.
    return any(hmac.compare_digest(expected.encode(), signature.encode()) for signature in signatures)
