"""Facebook Login for a server app: the dialog, Graph token calls, Page tokens, signed requests."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx

from service import errors
from service.providers.http import aware_utc, numeric_id, parse_json, send, shown

# 50 requests of 100 Pages each: far beyond any merchant, and a bound on a Graph that pages forever.
MAX_PAGE_REQUESTS = 50
PAGE_LIMIT = 100
MAX_SIGNED_REQUEST = 8 * 1024
# Ten years: far past any real lifetime, and well inside what datetime arithmetic can hold.
_MAX_LIFETIME_SECONDS = 10 * 365 * 24 * 3600
# Graph error 190: the token is expired, revoked, or died with a password change or logout. Its subcodes
# say why, as reason codes (service/vault/health.py words them); 102 (a session error) also means "log in
# again". (2500 does too, but Graph also answers it for a malformed path: it condemns no token here.)
_TOKEN_INVALID = 190
TOKEN_PROBLEMS = {
    458: "app_removed",
    459: "account_checkpointed",
    460: "password_changed",
    463: "token_expired",
    464: "user_unconfirmed",
    467: "session_invalid",
}
_LOG_IN_AGAIN = 102
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def appsecret_proof(access_token: str, app_secret: str) -> str:
    return hmac.new(app_secret.encode(), access_token.encode(), hashlib.sha256).hexdigest()


def messenger_signature_valid(body: bytes, header: str | None, app_secret: str) -> bool:
    """Whether `X-Hub-Signature-256` ("sha256=" and the hex HMAC-SHA256 of the raw body with the app
    secret) signs this body: the check a Messenger webhook must pass before anything is read from it."""
    if not header or not header.isascii() or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header.removeprefix("sha256=").lower().encode(), expected.encode())


def graph_error(body: Any) -> tuple[int | None, int | None]:
    """(code, error_subcode) of a Graph error body, or (None, None) when the body is not one."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    return _graph_int(error.get("code")), _graph_int(error.get("error_subcode"))


def token_problem(code: int | None, subcode: int | None) -> str | None:
    """Why Graph refused a token, as a reason code ("password_changed"); None when the error is not a dead
    token (a rate limit, a bad parameter)."""
    if code == _TOKEN_INVALID:
        return TOKEN_PROBLEMS.get(subcode, "token_invalid") if subcode is not None else "token_invalid"
    if code == _LOG_IN_AGAIN:
        return "login_required"
    return None


def refusal_detail(code: int | None, subcode: int | None) -> str:
    """What a message may quote of a Graph error, "code 190, subcode 460" (never its text: it can echo input)."""
    return f"code {code}, subcode {subcode}" if subcode is not None else f"code {code}"


@dataclass(frozen=True)
class TokenStatus:
    """What debug_token says of a token (docs/providers.md, "Token lifetimes, health and recovery")."""

    valid: bool
    problem: str | None  # why it is not valid, as token_problem's reason codes
    data_access_expires_at: datetime | None  # None: not stated (or 0)
    messaging_granted: bool | None  # pages_messaging for the Page asked about; None: not asked


def token_status(data: dict[str, Any], *, page_id: str | None = None) -> TokenStatus:
    """debug_token's `data` object as a TokenStatus. With page_id, whether `pages_messaging` covers that
    Page: in `granular_scopes` (an entry without target_ids covers every Page), else in `scopes`."""
    valid = data.get("is_valid") is True
    problem = None  # (the documented answer always lists scopes; one without them decides nothing)
    if not valid:
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        code = _graph_int(error.get("code"))
        subcode = _graph_int(error.get("subcode", error.get("error_subcode")))
        problem = token_problem(_TOKEN_INVALID if code is None else code, subcode) or "token_invalid"
    ends = _graph_int(data.get("data_access_expires_at"))
    data_access = datetime.fromtimestamp(ends, UTC) if ends is not None and 0 < ends < 2**37 else None
    messaging = None
    if page_id is not None:
        messaging = _messaging_granted(data, page_id)
    return TokenStatus(valid, problem, data_access, messaging)


def _messaging_granted(data: dict[str, Any], page_id: str) -> bool | None:
    """None when the answer lists no scopes at all: nothing to conclude from."""
    granular = data.get("granular_scopes")
    if isinstance(granular, list):
        for entry in granular:
            if isinstance(entry, dict) and entry.get("scope") == "pages_messaging":
                targets = entry.get("target_ids")
                return not isinstance(targets, list) or page_id in [str(target) for target in targets]
        return False
    scopes = data.get("scopes")
    return "pages_messaging" in scopes if isinstance(scopes, list) else None


def dialog_url(
    *, dialog_base: str, version: str, client_id: str, redirect_uri: str, state: str, scopes: list[str]
) -> str:
    query = urlencode(
        {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "scope": ",".join(scopes),
            "response_type": "code",
        }
    )
    return f"{dialog_base.removesuffix('/')}/{version}/dialog/oauth?{query}"


@dataclass(frozen=True)
class UserToken:
    access_token: str = field(repr=False)
    expires_at: datetime | None


@dataclass(frozen=True)
class Page:
    id: str
    name: str
    access_token: str = field(repr=False)
    category: str | None
    tasks: list[str]


def _graph_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _graph_error(status: int, body: Any, what: str) -> errors.ProviderError:
    # Only the numeric code and subcode are repeated: Graph's "message" can echo what we sent.
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {}
    code = _graph_int(error.get("code"))
    if code is None:
        return errors.ProviderError(f"Facebook answered {status} to the {what}")
    problem = token_problem(code, _graph_int(error.get("error_subcode")))
    if problem is not None:
        detail = refusal_detail(code, _graph_int(error.get("error_subcode")))
        return errors.TokenRevoked(
            f"Facebook says the token is no longer valid ({detail}): connect the Page again", reason=problem
        )
    return errors.ProviderError(f"Facebook answered {status} to the {what} (Graph error {code})")


def _user_token(body: dict[str, Any], *, now: datetime, what: str) -> UserToken:
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise errors.ProviderError(f"the {what} response had no access_token")
    expires_in = body.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit():
        expires_in = int(expires_in)
    if expires_in is None:
        # Long-lived exchanges sometimes omit it; the token then lives until something revokes it.
        return UserToken(access_token=access_token, expires_at=None)
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int | float)
        or not math.isfinite(expires_in)
        or not 0 <= expires_in <= _MAX_LIFETIME_SECONDS
    ):
        raise errors.ProviderError(f"the {what} response had an unusable expires_in")
    # Meta writes 0 for "does not expire by time".
    expires_at = aware_utc(now) + timedelta(seconds=expires_in) if expires_in > 0 else None
    return UserToken(access_token=access_token, expires_at=expires_at)


def _page(item: Any) -> Page | None:
    if not isinstance(item, dict):
        raise errors.ProviderError("an entry in the Page list was not a JSON object")
    token = item.get("access_token")
    if not isinstance(token, str) or not token:
        # Facebook leaves the token out when the user has no task on the Page that grants one.
        return None
    page_id = item.get("id")
    if not isinstance(page_id, str) or not page_id:
        raise errors.ProviderError("a Page in the Page list had no id")
    name, category, tasks = item.get("name"), item.get("category"), item.get("tasks")
    if not numeric_id(page_id):
        # It becomes a key, a path segment of our links and a Graph URL: only ever a number.
        named = f" {shown(name)}" if isinstance(name, str) and name else ""
        raise errors.InvalidProviderId(
            f"Facebook's Page list gave the Page{named} the id {shown(page_id)}, which is not a Page id (digits), "
            "so nothing of this login was stored: try again later."
        )
    return Page(
        id=page_id,
        name=name if isinstance(name, str) else "",
        access_token=token,
        category=category if isinstance(category, str) else None,
        tasks=[task for task in tasks if isinstance(task, str)] if isinstance(tasks, list) else [],
    )


class Graph:
    def __init__(
        self, client: httpx.AsyncClient, *, graph_base: str, version: str, app_id: str, app_secret: str
    ) -> None:
        self._client = client
        self._root = graph_base.removesuffix("/")
        self._versioned = f"{self._root}/{version}"
        self._app_id = app_id
        self._app_secret = app_secret

    def __repr__(self) -> str:
        return f"Graph({self._versioned!r}, app_id={self._app_id!r})"

    async def _get(self, url: str, params: dict[str, str], *, what: str, token: str | None = None) -> dict[str, Any]:
        return await self._call("GET", url, params, what=what, token=token)

    async def _call(
        self, method: str, url: str, params: dict[str, str], *, what: str, token: str | None = None
    ) -> dict[str, Any]:
        if token is not None:
            # With "Require App Secret" on, Graph refuses a user or Page token that comes without its proof.
            params = {
                **params,
                "access_token": token,
                "appsecret_proof": appsecret_proof(token, self._app_secret),
            }
        response = await send(
            self._client, "Facebook", method, url, what=what, params=params, headers={"Accept": "application/json"}
        )
        body = parse_json(response.content)
        if not response.is_success or (isinstance(body, dict) and "error" in body):
            raise _graph_error(response.status_code, body, what)
        if body is None:
            raise errors.ProviderError(f"the {what} response was not valid JSON")
        if not isinstance(body, dict):
            raise errors.ProviderError(f"the {what} response was not a JSON object")
        return body

    async def exchange_code(self, *, code: str, redirect_uri: str, now: datetime) -> UserToken:
        aware_utc(now)  # fail on a naive clock before a single-use code is spent
        params = {
            "client_id": self._app_id,
            "redirect_uri": redirect_uri,
            "client_secret": self._app_secret,
            "code": code,
        }
        body = await self._get(f"{self._versioned}/oauth/access_token", params, what="code exchange")
        return _user_token(body, now=now, what="code exchange")

    async def long_lived(self, user_token: str, *, now: datetime) -> UserToken:
        aware_utc(now)  # fail on a naive clock before anything is sent
        params = {
            "grant_type": "fb_exchange_token",
            "client_id": self._app_id,
            "client_secret": self._app_secret,
            "fb_exchange_token": user_token,
        }
        body = await self._get(f"{self._versioned}/oauth/access_token", params, what="long-lived token exchange")
        return _user_token(body, now=now, what="long-lived token exchange")

    async def me(self, user_token: str) -> dict[str, str]:
        body = await self._get(f"{self._versioned}/me", {"fields": "id,name"}, what="profile request", token=user_token)
        user_id, name = body.get("id"), body.get("name")
        if not isinstance(user_id, str) or not user_id:
            raise errors.ProviderError("the profile response had no id")
        if not numeric_id(user_id):
            raise errors.InvalidProviderId(
                f"Facebook gave the user id {shown(user_id)}, which is not a Facebook id (digits), so nothing of "
                "this login was stored: try again later."
            )
        return {"id": user_id, "name": name if isinstance(name, str) else ""}

    async def pages(self, user_token: str) -> list[Page]:
        url = f"{self._versioned}/me/accounts"
        params = {"fields": "id,name,access_token,category,tasks", "limit": str(PAGE_LIMIT)}
        found: list[Page] = []
        for _ in range(MAX_PAGE_REQUESTS):
            body = await self._get(url, params, what="Page list", token=user_token)
            data = body.get("data")
            if not isinstance(data, list):
                raise errors.ProviderError("the Page list response had no data list")
            found.extend(page for page in map(_page, data) if page is not None)
            paging = body.get("paging")
            if not isinstance(paging, dict) or not paging.get("next"):
                return found
            # paging.next is a URL from the network: it must not choose where our token goes, so only its
            # cursor is taken, into a request we build ourselves.
            cursors = paging.get("cursors")
            after = cursors.get("after") if isinstance(cursors, dict) else None
            if not isinstance(after, str) or not after:
                raise errors.ProviderError("the Page list said there was more but gave no after cursor")
            params = {**params, "after": after}
        return found

    async def revoke_permissions(self, user_id: str, user_token: str) -> None:
        """Remove the app for this user (`DELETE /{user-id}/permissions`): the user token and every Page
        token of the grant die with it. Graph error 190 (TokenRevoked): the grant was gone already."""
        if not numeric_id(user_id):
            raise ValueError("a Facebook user id is digits")  # it goes into the URL's path
        url = f"{self._versioned}/{user_id}/permissions"
        body = await self._call("DELETE", url, {}, what="permission removal", token=user_token)
        if body.get("success") is not True:
            raise errors.ProviderError("Facebook did not confirm the permission removal")

    async def debug_token(self, input_token: str) -> dict[str, Any]:
        # The app token is "{app_id}|{app_secret}" itself, so there is no proof to add.
        params = {"input_token": input_token, "access_token": f"{self._app_id}|{self._app_secret}"}
        body = await self._get(f"{self._root}/debug_token", params, what="token check")
        data = body.get("data")
        if not isinstance(data, dict):
            raise errors.ProviderError("the token check response had no data object")
        return data


# --- signed requests (deauthorize and data deletion callbacks) ----------------------------------


def _b64url_decode(part: str) -> bytes | None:
    if not _BASE64URL.fullmatch(part):
        return None
    bare = part.rstrip("=")
    try:
        return base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except (binascii.Error, ValueError):
        return None


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signature(payload_part: str, app_secret: str) -> bytes:
    return hmac.new(app_secret.encode(), payload_part.encode("ascii"), hashlib.sha256).digest()


def parse_signed_request(signed_request: str, *, app_secret: str) -> dict[str, Any]:
    # Messages say which check failed and never quote the input.
    if len(signed_request) > MAX_SIGNED_REQUEST:
        raise errors.InvalidSignedRequest("the signed_request is longer than 8 KiB")
    if not signed_request.isascii():
        raise errors.InvalidSignedRequest("the signed_request is not ASCII")
    sig_part, dot, payload_part = signed_request.partition(".")
    if not dot or not sig_part or not payload_part:
        raise errors.InvalidSignedRequest("the signed_request is not a signature and a payload joined by '.'")
    signature = _b64url_decode(sig_part)
    if signature is None or len(signature) != hashlib.sha256().digest_size:
        raise errors.InvalidSignedRequest("the signed_request's signature is not 32 bytes of base64url")
    # Signed bytes are the payload part exactly as received, padding and all: never a re-encoding of it.
    if not hmac.compare_digest(signature, _signature(payload_part, app_secret)):
        raise errors.InvalidSignedRequest("the signed_request's signature does not match its payload")
    raw = _b64url_decode(payload_part)
    payload = parse_json(raw) if raw is not None else None
    if not isinstance(payload, dict):
        raise errors.InvalidSignedRequest("the signed_request's payload is not a base64url JSON object")
    algorithm = payload.get("algorithm")
    if not isinstance(algorithm, str) or algorithm.upper() != "HMAC-SHA256":
        raise errors.InvalidSignedRequest("the signed_request's algorithm is not HMAC-SHA256")
    if payload.get("user_id") is None and payload.get("profile_id") is None:
        raise errors.InvalidSignedRequest("the signed_request names neither a user_id nor a profile_id")
    return payload


SIGNED_REQUEST_MAX_AGE = 3600.0  # seconds an issued_at may lie behind now
SIGNED_REQUEST_MAX_AHEAD = 300.0  # and ahead of it (clocks differ)


def check_issued_at(
    payload: dict[str, Any],
    *,
    now: float,
    max_age: float = SIGNED_REQUEST_MAX_AGE,
    max_ahead: float = SIGNED_REQUEST_MAX_AHEAD,
) -> None:
    """Refuse a parsed signed_request issued outside [now - max_age, now + max_ahead]: a signature
    never expires, so without this one captured request would work forever."""
    issued = payload.get("issued_at")
    if isinstance(issued, bool) or not isinstance(issued, int | float) or not math.isfinite(issued):
        raise errors.InvalidSignedRequest("the signed_request has no issued_at time")
    age = now - issued
    if age > max_age:
        raise errors.StaleRequest(f"the signed_request was issued {age:.0f} s ago (more than {max_age:g} s)")
    if -age > max_ahead:
        raise errors.StaleRequest(f"the signed_request is {-age:.0f} s in the future (more than {max_ahead:g} s)")


def payload_digest(payload: dict[str, Any], *, key: bytes) -> str:
    """A keyed hex digest of a parsed signed_request's payload, the same for every encoding of it:
    what a replay is recognised by."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def make_signed_request(payload: dict[str, Any], *, app_secret: str) -> str:
    payload_part = _b64url_encode(json.dumps(payload, separators=(",", ":")).encode())
    return f"{_b64url_encode(_signature(payload_part, app_secret))}.{payload_part}"
