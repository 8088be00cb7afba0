"""Shopify OAuth: shop names, callback and webhook signatures, and the token endpoint."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx

from service import errors
from service.providers.http import aware_utc, parse_json, send, shown

SHOP_SUFFIX = ".myshopify.com"
MAX_NAME_LENGTH = 255
# Shopify's documented lifetime of an expiring offline access token, for responses that forget expires_in.
ACCESS_TOKEN_LIFETIME = timedelta(hours=1)
# Ten years: far past any real lifetime, and well inside what datetime arithmetic can hold.
_MAX_LIFETIME_SECONDS = 10 * 365 * 24 * 3600

_SHOP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_ADMIN_STORE_PREFIX = "admin.shopify.com/store/"
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
# Only an error code this tame may appear in our messages; error_description never does (it can echo input).
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_.\[\]-]{1,40}")
_READ_SCOPE = re.compile(r"(unauthenticated_)?read_(.+)")
# Shopify's access scopes are lower-case words joined by underscores (read_products, write_orders,
# unauthenticated_read_product_listings, customer_read_orders).
_SCOPE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
MAX_SCOPE_LENGTH = 100
_REQUIRED_CALLBACK_PARAMS = ("hmac", "shop", "code", "state", "timestamp")
_UNSIGNED_PARAMS = frozenset({"hmac", "signature"})
_TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
_OFFLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:offline-access-token"


# --- shop names and URLs -------------------------------------------------------------------------


def normalize_shop(raw: str) -> str:
    text = raw.strip()
    # Non-ASCII is refused before lower-casing: str.lower() maps look-alikes (the Kelvin sign) onto ASCII.
    if text.isascii():
        text = text.lower()
        for scheme in ("https://", "http://"):
            if text.startswith(scheme):
                text = text[len(scheme) :]
                break
        text = text.removesuffix("/")
        if text.startswith(_ADMIN_STORE_PREFIX):
            name = text[len(_ADMIN_STORE_PREFIX) :]
        else:
            name = text.removesuffix(SHOP_SUFFIX)
        # Everything else (dots, ports, paths, "@", "%", queries) fails here, so no URL is ever built from it.
        if _SHOP_NAME.fullmatch(name):
            return name + SHOP_SUFFIX
    shown = repr(raw) if len(raw) <= 100 and raw.isascii() and raw.isprintable() else "the shop name"
    raise errors.InvalidShop(f"{shown} is not a valid Shopify shop name: give the store's name or name.myshopify.com")


def shop_key(shop_domain: str) -> str:
    return normalize_shop(shop_domain).removesuffix(SHOP_SUFFIX)


def admin_base_url(template: str, shop_domain: str) -> str:
    # Normalised here too, so no caller can put an unchecked host into a URL that will carry a secret.
    return template.replace("{shop}", normalize_shop(shop_domain)).removesuffix("/")


def authorize_url(*, admin_base: str, client_id: str, scopes: list[str], redirect_uri: str, state: str) -> str:
    query = urlencode({"client_id": client_id, "scope": ",".join(scopes), "redirect_uri": redirect_uri, "state": state})
    return f"{admin_base}/admin/oauth/authorize?{query}"


# --- the OAuth callback --------------------------------------------------------------------------


def callback_message(params: list[tuple[str, str]]) -> str:
    # Values are used exactly as received: re-encoding them is the classic cause of HMAC mismatches.
    signed = sorted((pair for pair in params if pair[0] not in _UNSIGNED_PARAMS), key=lambda pair: pair[0])
    return "&".join(f"{key}={value}" for key, value in signed)


def _hmac_hex(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def _param_name(name: str) -> str:
    return repr(name) if _PARAM_NAME.fullmatch(name) else "a parameter"


def verify_callback(
    params: list[tuple[str, str]], *, secret: str, now: float, max_skew: float = 90.0
) -> dict[str, str]:
    # A repeated key would let the signed value and the value we act on differ.
    repeated = sorted(name for name, count in Counter(key for key, _ in params).items() if count > 1)
    if repeated:
        names = ", ".join(_param_name(name) for name in repeated)
        raise errors.InvalidCallback(f"the Shopify callback repeats {names}")
    query = dict(params)
    for name in _REQUIRED_CALLBACK_PARAMS:
        if not query.get(name):
            raise errors.InvalidCallback(f"the Shopify callback has no {name} parameter")

    received = query["hmac"]
    if not _HEX_DIGEST.fullmatch(received):
        raise errors.InvalidSignature("the Shopify callback's hmac is not 64 lower-case hex digits")
    if not hmac.compare_digest(received, _hmac_hex(secret, callback_message(params))):
        raise errors.InvalidSignature("the Shopify callback's hmac does not match its parameters")

    # Checked after the HMAC, so the timestamp we judge is one Shopify signed.
    timestamp = query["timestamp"]
    if not _TIMESTAMP.fullmatch(timestamp):
        raise errors.StaleRequest("the Shopify callback's timestamp is not a whole number of seconds")
    skew = now - int(timestamp)
    if abs(skew) > max_skew:
        when = "old" if skew > 0 else "in the future"
        raise errors.StaleRequest(
            f"the Shopify callback is {abs(skew):.0f} s {when} (more than {max_skew:g} s): start again"
        )
    return query


# --- webhooks and scopes -------------------------------------------------------------------------


def webhook_signature(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verify_webhook(body: bytes, header: str | None, *, secret: str) -> None:
    if not header:
        raise errors.WebhookUnauthorized("the webhook has no X-Shopify-Hmac-Sha256 header")
    # Compared as bytes: compare_digest refuses non-ASCII str, and a header is whatever the sender chose.
    given = header.encode("utf-8", "replace")
    if not hmac.compare_digest(given, webhook_signature(body, secret).encode()):
        raise errors.WebhookUnauthorized("the webhook's X-Shopify-Hmac-Sha256 does not match its body")


UNINSTALLED = "app/uninstalled"
# The fields each topic we act on documents, with their JSON types (PROVIDERS.md). The shop acted on
# always comes from the signed body: the headers (topic, shop) are not covered by the signature.
_COMPLIANCE_FIELDS: dict[str, dict[str, type]] = {
    "shop/redact": {"shop_id": int, "shop_domain": str},
    "customers/redact": {"shop_id": int, "shop_domain": str, "customer": dict, "orders_to_redact": list},
    "customers/data_request": {
        "shop_id": int,
        "shop_domain": str,
        "customer": dict,
        "orders_requested": list,
        "data_request": dict,
    },
}
WEBHOOK_TOPICS = frozenset({UNINSTALLED, *_COMPLIANCE_FIELDS})


@dataclass(frozen=True)
class Webhook:
    topic: str
    shop: str | None  # from the signed body; None for a topic we do not act on
    payload: dict[str, Any] = field(repr=False)


def _has(payload: dict[str, Any], name: str, kind: type) -> bool:
    value = payload.get(name)
    return isinstance(value, kind) and not isinstance(value, bool)


def _body_shop(value: Any, topic: str, name: str) -> str:
    if isinstance(value, str):
        with contextlib.suppress(errors.InvalidShop):
            return normalize_shop(value)
    raise errors.WebhookFieldsMissing(f"the {topic} webhook's {name} is not a Shopify shop domain")


def parse_webhook(topic: str, body: bytes) -> Webhook:
    """A verified webhook body, checked against its topic. Call only after verify_webhook."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        # The callback's query string is signed with the same secret: only a JSON object is a webhook.
        raise errors.WebhookNotJSON("the webhook body is not a JSON object")
    if topic == UNINSTALLED:
        if not _has(payload, "id", int):
            raise errors.WebhookFieldsMissing("the app/uninstalled webhook has no shop id")
        name = "myshopify_domain" if "myshopify_domain" in payload else "domain"
        return Webhook(topic, _body_shop(payload.get(name), topic, name), payload)
    fields = _COMPLIANCE_FIELDS.get(topic)
    if fields is None:
        return Webhook(topic, None, payload)
    missing = [name for name, kind in fields.items() if not _has(payload, name, kind)]
    if missing:
        raise errors.WebhookFieldsMissing(f"the {topic} webhook has no usable {', '.join(missing)}")
    return Webhook(topic, _body_shop(payload["shop_domain"], topic, "shop_domain"), payload)


def _split_scopes(scopes: str) -> list[str]:
    return [scope.strip() for scope in scopes.split(",") if scope.strip()]


def check_scopes(requested: list[str], granted: str) -> list[str]:
    granted_list = _split_scopes(granted)
    have = set(granted_list)
    missing: list[str] = []
    for scope in (s.strip() for s in requested):
        if not scope or scope in have or scope in missing:
            continue
        # Shopify grants write_x alone when read_x and write_x are asked for: write implies read.
        read = _READ_SCOPE.fullmatch(scope)
        if read and f"{read.group(1) or ''}write_{read.group(2)}" in have:
            continue
        missing.append(scope)
    if missing:
        raise errors.ScopeMismatch(f"Shopify did not grant the scopes {', '.join(missing)}: install the app again")
    return granted_list


# --- tokens --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShopifyToken:
    access_token: str = field(repr=False)
    scopes: list[str]
    expires_at: datetime | None
    refresh_token: str | None = field(repr=False)
    refresh_expires_at: datetime | None


def _error_code(response: httpx.Response) -> str | None:
    body = parse_json(response.content)
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None


def _seconds(body: dict[str, Any], name: str, what: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= _MAX_LIFETIME_SECONDS
    ):
        raise errors.ProviderError(f"the {what} response had an unusable {name}")
    return value


def _token(body: dict[str, Any], *, now: datetime, what: str) -> ShopifyToken:
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise errors.ProviderError(f"the {what} response had no access_token")
    scope = body.get("scope")
    if not isinstance(scope, str):
        raise errors.ProviderError(f"the {what} response had no scope")
    for granted in _split_scopes(scope):
        if len(granted) > MAX_SCOPE_LENGTH or not _SCOPE.fullmatch(granted):
            raise errors.InvalidProviderId(
                f"the {what} response granted the scope {shown(granted)}, which is not a Shopify scope, so "
                "nothing of it was stored"
            )
    refresh_token = body.get("refresh_token")
    if refresh_token is not None and (not isinstance(refresh_token, str) or not refresh_token):
        raise errors.ProviderError(f"the {what} response had an unusable refresh_token")
    expires_in = _seconds(body, "expires_in", what)
    refresh_expires_in = _seconds(body, "refresh_token_expires_in", what)

    issued = aware_utc(now)
    if expires_in is not None:
        expires_at: datetime | None = issued + timedelta(seconds=expires_in)
    elif refresh_token is not None:
        # A refresh token means the access token expires. Storing "never" would mean never refreshing it, so
        # assume Shopify's documented hour (the "expiry empty forever" bug in docs/providers.md).
        expires_at = issued + ACCESS_TOKEN_LIFETIME
    else:
        expires_at = None
    return ShopifyToken(
        access_token=access_token,
        scopes=_split_scopes(scope),
        expires_at=expires_at,
        refresh_token=refresh_token,
        refresh_expires_at=issued + timedelta(seconds=refresh_expires_in) if refresh_expires_in else None,
    )


async def _token_request(
    client: httpx.AsyncClient,
    *,
    admin_base: str,
    form: dict[str, str],
    now: datetime,
    what: str,
    invalid_grant_revokes: bool = False,
) -> ShopifyToken:
    aware_utc(now)  # fail on a naive clock before anything is sent
    response = await send(
        client,
        "Shopify",
        "POST",
        f"{admin_base}/admin/oauth/access_token",
        what=what,
        data=form,
        headers={"Accept": "application/json"},
    )
    if not response.is_success:
        code = _error_code(response)
        if invalid_grant_revokes and response.status_code in (400, 401) and code == "invalid_grant":
            # The refresh token was used already or is past its 90 days: only a new install helps.
            raise errors.TokenRevoked("Shopify refused the refresh token (invalid_grant): install the app again")
        detail = f" ({code})" if code else ""
        raise errors.ProviderError(f"Shopify answered {response.status_code} to the {what}{detail}")
    body = parse_json(response.content)
    if body is None:
        raise errors.ProviderError(f"the {what} response was not valid JSON")
    if not isinstance(body, dict):
        raise errors.ProviderError(f"the {what} response was not a JSON object")
    return _token(body, now=now, what=what)


async def exchange_code(
    client: httpx.AsyncClient,
    *,
    admin_base: str,
    client_id: str,
    client_secret: str,
    code: str,
    now: datetime,
) -> ShopifyToken:
    # expiring=1: public apps created since 2026-04-01 must use expiring offline tokens.
    form = {"client_id": client_id, "client_secret": client_secret, "code": code, "expiring": "1"}
    return await _token_request(client, admin_base=admin_base, form=form, now=now, what="token exchange")


async def refresh_access_token(
    client: httpx.AsyncClient,
    *,
    admin_base: str,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    now: datetime,
) -> ShopifyToken:
    form = {
        "client_id": client_id,
        "client_secret": client_secret,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
    }
    return await _token_request(
        client, admin_base=admin_base, form=form, now=now, what="token refresh", invalid_grant_revokes=True
    )


async def migrate_to_expiring(
    client: httpx.AsyncClient,
    *,
    admin_base: str,
    client_id: str,
    client_secret: str,
    access_token: str,
    now: datetime,
) -> ShopifyToken:
    # Irreversible: Shopify revokes the old non-expiring token once this succeeds.
    form = {
        "client_id": client_id,
        "client_secret": client_secret,
        "grant_type": _TOKEN_EXCHANGE_GRANT,
        "subject_token": access_token,
        "subject_token_type": _OFFLINE_TOKEN_TYPE,
        "requested_token_type": _OFFLINE_TOKEN_TYPE,
        "expiring": "1",
    }
    return await _token_request(client, admin_base=admin_base, form=form, now=now, what="token migration")


async def _admin_call(
    client: httpx.AsyncClient, method: str, url: str, *, access_token: str, what: str
) -> httpx.Response:
    headers = {"X-Shopify-Access-Token": access_token, "Accept": "application/json"}
    return await send(client, "Shopify", method, url, what=what, headers=headers)


def _accepted(response: httpx.Response, what: str) -> bool:
    """True on success; False when Shopify no longer accepts the token (401, 403; 404: the shop is closed
    or gone, and either way the token will not serve us); ProviderError for anything else."""
    if response.is_success:
        return True
    if response.status_code in (401, 403, 404):
        return False
    raise errors.ProviderError(f"Shopify answered {response.status_code} to the {what}")


async def token_works(
    client: httpx.AsyncClient, *, admin_base: str, access_token: str, api_version: str
) -> bool:
    url = f"{admin_base}/admin/api/{api_version}/shop.json"
    response = await _admin_call(client, "GET", url, access_token=access_token, what="shop check")
    return _accepted(response, "shop check")


async def shop_name(
    client: httpx.AsyncClient, *, admin_base: str, access_token: str, api_version: str
) -> str | None:
    """The shop's name (`shop.json`), or None when Shopify does not give one: a name is worth showing,
    not worth failing a connect for, so every failure here is None."""
    url = f"{admin_base}/admin/api/{api_version}/shop.json"
    try:
        response = await _admin_call(client, "GET", url, access_token=access_token, what="shop details")
    except errors.ServiceError:
        return None
    body = parse_json(response.content) if response.is_success else None
    shop = body.get("shop") if isinstance(body, dict) else None
    name = shop.get("name") if isinstance(shop, dict) else None
    if not isinstance(name, str) or not name.strip():
        return None
    return name.strip()[:MAX_NAME_LENGTH]


async def revoke_access(client: httpx.AsyncClient, *, admin_base: str, access_token: str) -> bool:
    """Give up the app's access to the shop (`DELETE /admin/api_permissions/current.json`; Shopify then
    sends app/uninstalled). True when Shopify revoked it; False when it no longer accepted the token
    (nothing left to revoke). Raises ProviderError or ProviderUnavailable otherwise."""
    url = f"{admin_base}/admin/api_permissions/current.json"
    response = await _admin_call(client, "DELETE", url, access_token=access_token, what="access removal")
    return _accepted(response, "access removal")
