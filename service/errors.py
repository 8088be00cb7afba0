"""Every failure the service reports on purpose, in one small tree.

Each class carries an HTTP status and a short, stable `code` that tests, pages and scripts can rely
on. Messages are written for the person who has to act on them and never contain a token, a code,
a secret or a ciphertext: callers pass names (of settings, of rows), never values.
"""

from __future__ import annotations

import math


class ServiceError(Exception):
    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code

    def as_dict(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message}

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the error needs beside its status (Retry-After, say)."""
        return {}


# --- configuration -------------------------------------------------------------------------------


class SettingsError(ServiceError):
    """A setting is missing or unusable; raised at start-up, before anything is touched."""

    status_code = 500
    code = "settings_invalid"


class NotConfigured(ServiceError):
    """A route needs a setting (e.g. SHOPIFY_API_KEY) that this deployment did not give."""

    status_code = 503
    code = "not_configured"


# --- the vault -----------------------------------------------------------------------------------


class InvalidInput(ServiceError):
    status_code = 400
    code = "invalid_input"


class UndecryptableValue(ServiceError):
    """No key in the ring opens a stored value. The message names the row's key, never its value."""

    status_code = 500
    code = "undecryptable_value"


class SchemaOutOfDate(ServiceError):
    status_code = 503
    code = "schema_out_of_date"


class DatabaseUnavailable(ServiceError):
    """The database cannot be reached or opened right now (refused, reset, restarting, no pooled connection
    in time); a later call may succeed. `retry_after`: the seconds we suggest waiting first."""

    status_code = 503
    code = "database_unavailable"
    SUGGESTED_WAIT = 2.0

    def __init__(self, message: str, *, retry_after: float = SUGGESTED_WAIT) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(math.ceil(self.retry_after))}


class DatabaseMissing(ServiceError):
    """A SQLite file that does not exist: opening never creates one (only `salesbot migrate` does)."""

    status_code = 503
    code = "database_missing"


# --- OAuth and webhooks --------------------------------------------------------------------------


class InvalidShop(ServiceError):
    status_code = 400
    code = "invalid_shop"


class InvalidSignature(ServiceError):
    """A callback's HMAC does not match: forged, truncated or signed with another secret."""

    status_code = 400
    code = "invalid_hmac"


class StaleRequest(ServiceError):
    status_code = 400
    code = "stale_timestamp"


class InvalidState(ServiceError):
    """The OAuth state is unknown, expired, already used, or belongs to another browser."""

    status_code = 400
    code = "invalid_state"


class ScopeMismatch(ServiceError):
    status_code = 400
    code = "scope_mismatch"


class AccessDenied(ServiceError):
    """The merchant pressed Cancel on the provider's consent page: a normal outcome."""

    status_code = 400
    code = "access_denied"


class InvalidCallback(ServiceError):
    """A callback lacks a parameter it must have, or has it twice."""

    status_code = 400
    code = "invalid_callback"


class WebhookUnauthorized(ServiceError):
    status_code = 401
    code = "invalid_webhook_signature"


class WebhookNotJSON(WebhookUnauthorized):
    """A correctly signed body that is not a JSON object: not a webhook (a callback's query string, say)."""

    code = "invalid_webhook_body"


class WebhookShopMismatch(WebhookUnauthorized):
    """The unsigned X-Shopify-Shop-Domain header names another shop than the signed body."""

    code = "webhook_shop_mismatch"


class WebhookFieldsMissing(ServiceError):
    """A signed JSON body without the fields its topic documents."""

    status_code = 400
    code = "webhook_fields_missing"


class OwnedElsewhere(ServiceError):
    """A callback proved an identity whose links belong to another account than the one it would
    join: that part of it was not joined (DESIGN.md, "Accounts")."""

    status_code = 409
    code = "owned_elsewhere"


class ShopOwnedElsewhere(OwnedElsewhere):
    code = "shop_owned_elsewhere"


class FacebookUserOwnedElsewhere(OwnedElsewhere):
    code = "facebook_user_owned_elsewhere"


class PageOwnedElsewhere(OwnedElsewhere):
    """Pages another Facebook user linked; the grant's other Pages were stored."""

    code = "page_owned_elsewhere"

    def __init__(self, message: str, *, pages: list[str]) -> None:
        super().__init__(message)
        self.pages = pages

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "pages": self.pages}


class CsrfFailed(ServiceError):
    """A form POST without this session's CSRF token: sent from another site, or from a page of an older
    session. Refused before anything is done."""

    status_code = 403
    code = "csrf_failed"


class InvalidChoice(ServiceError):
    """A form names something that is not one of its choices (a Page outside the grant, say)."""

    status_code = 400
    code = "invalid_choice"


class PagesChanged(ServiceError):
    """Facebook no longer lists a chosen Page for the user (with messaging) as it did a moment ago."""

    status_code = 409
    code = "pages_changed"


class InvalidSignedRequest(ServiceError):
    status_code = 400
    code = "invalid_signed_request"


class TooManySignIns(ServiceError):
    """A browser or an address holds too many unfinished sign-ins; `Retry-After` says when one expires."""

    status_code = 429
    code = "too_many_sign_ins"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ProviderError(ServiceError):
    """The provider answered, but not with what we asked for (4xx/5xx, malformed JSON, Graph errors)."""

    status_code = 502
    code = "provider_error"


class ProviderUnavailable(ServiceError):
    """The provider did not answer in time, or the connection failed. `retry_after`: the seconds before a
    new try can help (a shop's refresh cooldown), or None."""

    status_code = 504
    code = "provider_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def as_dict(self) -> dict[str, object]:
        found = super().as_dict()
        return found if self.retry_after is None else {**found, "retry_after": math.ceil(self.retry_after)}

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(math.ceil(self.retry_after))}


class InvalidProviderId(ProviderError):
    """A provider's answer carries an identifier that cannot be one (a Page id that is not a number, a
    Shopify scope outside its grammar): the answer is refused whole, nothing of it stored."""

    code = "invalid_provider_id"


class TokenRevoked(ProviderError):
    """The provider says the token no longer works (Graph error 190, Shopify 401, `invalid_grant`).
    `reason`: why, as a code of service.vault.health.REASONS ("password_changed"), when known."""

    code = "token_revoked"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "reason": self.reason}


class RateLimited(ProviderError):
    """The provider asks us to slow down (Shopify's throttle, Graph's rate limits); `retry_after` is the wait
    in seconds it stated, or None when it stated none."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(math.ceil(self.retry_after))}


class MetricsUnauthorized(ServiceError):
    """GET /metrics without METRICS_TOKEN as its bearer token."""

    status_code = 401
    code = "metrics_unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="metrics"'}


class ApiKeyRefused(ServiceError):
    """A request to /api/v1 without a key, or with one that is wrong or revoked (service/api_keys.py)."""

    status_code = 401
    code = "invalid_api_key"

    def __init__(self, message: str, *, given: bool) -> None:
        super().__init__(message)
        self.given = given

    @property
    def headers(self) -> dict[str, str]:
        # RFC 6750: no error attribute when no credentials were sent at all.
        return {"WWW-Authenticate": 'Bearer realm="api"' + (', error="invalid_token"' if self.given else "")}


class ScopeMissing(ServiceError):
    """An API key whose scope does not cover the endpoint (a proxy key asking for a token, say)."""

    status_code = 403
    code = "insufficient_scope"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class ForeignHost(ServiceError):
    """A bot's client was asked to send to a host other than its provider's (an absolute URL, or a redirect to
    another origin): refused before anything was sent, so a token never reaches another host."""

    status_code = 400
    code = "foreign_host"
