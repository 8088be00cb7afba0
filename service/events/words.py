"""An event in words, for the merchant's "Recent activity" ("Acme Outlet disconnected by you, 7 Dec 14:02
UTC"; "Acme Outlet: Shopify token renewed automatically, ..."; "Acme Outlet needs reconnecting: its
Facebook password was changed (found by the bot), ..."). A health event's words are vault/health.py's.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from service import events, keys
from service.vault import health

if TYPE_CHECKING:
    from service.vault import LoggedEvent

PROVIDERS = {keys.SHOPIFY: "Shopify", keys.FACEBOOK: "Facebook"}
BY = {
    events.WEB: "by you",
    events.BOT: "by the bot",
    events.SWEEP: "by the connection check",
    events.CLI: "by the operator",
}


def label(event: LoggedEvent) -> str:
    """What the merchant calls the connection: its name, else its shop domain, Page or Facebook login."""
    is_login = (event.key or "").startswith(keys.FACEBOOK_USER_TOKEN_PREFIX)
    if is_login:
        return f"Your Facebook login ({event.name})" if event.name else "Your Facebook login"
    if event.name:
        return event.name
    if event.provider == keys.FACEBOOK and event.subject:
        return f"Page {event.subject}"
    return event.subject or "Your connections"


def _by(event: LoggedEvent) -> str:
    if event.actor == events.WEBHOOK:
        return f"by {PROVIDERS.get(event.provider or '', 'the provider')}"
    return BY.get(event.actor, "")


def _verdict(event: LoggedEvent, provider: str) -> str:
    """What a health event found, as the end of a sentence ("its Facebook password was changed")."""
    if event.reason not in health.REASONS:
        return f"{provider} no longer accepts its token"
    until = (event.detail or {}).get("until")
    found = health.Health(event.health or health.NEEDS_RECONNECT, event.reason, _moment(until))
    return found.clause or ""


def _moment(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _health_changed(event: LoggedEvent, what: str, provider: str) -> str:
    if event.health == health.EXPIRING_SOON:
        return f"{what}: {_verdict(event, provider)} (found {_by(event)})"
    return f"{what} needs reconnecting: {_verdict(event, provider)} (found {_by(event)})"


def sentence(event: LoggedEvent) -> str:
    what, provider = label(event), PROVIDERS.get(event.provider or "", "The provider")
    phrases = {
        events.CONNECTED: f"{what} connected {_by(event)}",
        events.RECONNECTED: f"{what} connected again {_by(event)}",
        events.REFRESHED: f"{what}: {provider} token renewed automatically",
        events.REFRESH_FAILED: f"{what}: {provider} could not renew its token just now; it is tried again by itself",
        events.RECOVERED: f"{what} works again",
        events.HEALTH_CHANGED: _health_changed(event, what, provider),
        events.MARKED_DEAD: _health_changed(event, what, provider),
        events.DISCONNECTED: f"{what} disconnected {_by(event)}",
        events.UNINSTALLED: f"{what}: the app was uninstalled in Shopify",
        events.REDACTED: f"{what}: Shopify asked us to erase the store's data, and it was erased",
        events.DEAUTHORIZED: f"{what}: the app was removed on Facebook",
        events.DATA_DELETED: f"{what}: Facebook asked us to delete the data, and it was deleted",
        events.TOKEN_SET: f"{what}: token set {_by(event)}",
        events.TOKEN_DELETED: f"{what}: token deleted {_by(event)}",
        events.IMPORTED: f"Tokens imported {_by(event)}",
        events.RESTORED: f"Connections restored from a backup {_by(event)}",
        events.KEYS_ROTATED: f"Encryption keys rotated {_by(event)}",
        events.API_KEY_CREATED: f"API key {event.name or ''} created {_by(event)}".replace("  ", " "),
        events.API_KEY_REVOKED: f"API key {event.name or ''} revoked {_by(event)}".replace("  ", " "),
    }
    return phrases.get(event.kind, f"{what}: {event.kind.replace('_', ' ')}").rstrip()


def in_words(event: LoggedEvent) -> str:
    at = event.at
    return f"{sentence(event)}, {at.day} {at:%b %H:%M} UTC"


def described(event: LoggedEvent) -> dict[str, Any]:
    """The status page's entry (HTML and JSON): the words, and what a script needs beside them."""
    return {
        "id": event.id,
        "kind": event.kind,
        "when": event.as_dict()["when"],
        "words": in_words(event),
        "provider": event.provider,
        "subject": event.subject,
        "name": event.name,
        "by": event.actor,
        "health": event.health,
        "reason": event.reason,
    }
