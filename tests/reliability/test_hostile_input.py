"""Hostile input, property-based (hypothesis, derandomized): every one answers 4xx with a stable code, never a
500, never a redirect elsewhere, never an outbound request, and the store is byte-for-byte unchanged.

Requests are sent straight to the ASGI app (raw query bytes, raw header bytes), so nothing between the
test and the app normalises them first. One app per test; hypothesis examples share it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import quote, urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.settings import Settings
from tests.routes.helpers import count_states, snapshot
from tests.web import (
    FACEBOOK_SECRET,
    SANDBOX,
    SHOPIFY_SECRET,
    Web,
    choose_pages,
    click,
    connect_shopify,
    running_app,
)

PROPERTY = settings(
    derandomize=True,
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
STABLE_CODES = {
    "invalid_callback",
    "invalid_hmac",
    "stale_timestamp",
    "invalid_state",
    "invalid_shop",
    "access_denied",
    "invalid_signed_request",
    "invalid_webhook_signature",
    "not_found",
    "method_not_allowed",
    "http_error",
    "already_connected",  # not an error: the Back button's message on the status page (see refused())
}
SHOP = "acme-7cu19ngr.myshopify.com"


class Hostile:
    def __init__(self, web: Web, cookie: str, replay_shopify: str, replay_facebook: str) -> None:
        self.web = web
        self.cookie = cookie  # the merchant's real session cookie: hostile input from a browser with a session
        self.replay_shopify = replay_shopify  # query of a callback that already succeeded
        self.replay_facebook = replay_facebook


async def asgi(
    app: object, method: str, path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] = (), body: bytes = b""
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 5555),
        "server": ("testserver", 80),
    }
    sent = False
    out: dict = {"headers": [], "body": b""}

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = message["headers"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)  # type: ignore[operator]
    return out["status"], dict(out["headers"]), out["body"]


def stable_code(headers: dict[bytes, bytes], body: bytes) -> str:
    if headers.get(b"content-type", b"").startswith(b"application/json"):
        return json.loads(body)["error"]
    text = body.decode()
    return text.split('data-code="', 1)[1].split('"', 1)[0]


async def refused(
    h: Hostile,
    method: str,
    path: str,
    query: bytes = b"",
    headers=(),
    body: bytes = b"",
    *,
    allowed=(),
    cancel=False,
    already_connected=False,
):
    """Send it; assert 4xx + stable code, no redirect, no outbound request, nothing stored; return the code.
    With `cancel`, a callback that carries an error (the merchant cancelled) may instead end on the status
    page: a redirect to "/" exactly, where the message waits. With `already_connected`, so may a Shopify
    callback Shopify signed for the store this browser's account holds (the Back button after an install),
    its message saying so."""
    before, states, outbound = await snapshot(h.web.store), await count_states(h.web.store), len(h.web.outbound.urls)
    status, response_headers, response_body = await asgi(h.web.app, method, path, query, list(headers), body)
    if cancel and status == 303:
        assert response_headers[b"location"] == b"/", response_headers
        code = "access_denied"
    elif already_connected and status == 303:
        assert response_headers[b"location"] == b"/", response_headers
        _status, _headers, page = await asgi(h.web.app, "GET", "/", b"", list(headers))
        assert b"acme-7cu19ngr.myshopify.com is already connected" in page
        code = "already_connected"
    else:
        assert 400 <= status < 500, (status, response_body[:200])
        code = stable_code(response_headers, response_body)
        assert b"location" not in response_headers
    assert code in (allowed or STABLE_CODES), code
    assert len(h.web.outbound.urls) == outbound
    assert await snapshot(h.web.store) == before
    assert await count_states(h.web.store) <= states  # a refused callback never adds a state
    return code


@pytest.fixture
async def hostile(migrated: Settings) -> AsyncIterator[Hostile]:
    async with running_app(migrated.database_url) as web:
        shopify_done = await connect_shopify(web.browser)
        # The grant's three Pages: the callback ends on the choice of Pages, the choice on the status page.
        facebook_done = await click(web.browser, await web.browser.get("/facebook/login"), "allow")
        await choose_pages(web.browser, facebook_done)
        replay_shopify = next(
            urlsplit(str(r.url)).query for r in shopify_done.history if "/shopify/callback" in str(r.url)
        )
        replay_facebook = next(
            urlsplit(str(r.url)).query for r in facebook_done.history if "/facebook/callback" in str(r.url)
        )
        cookie = f"salesbot_session={web.browser.cookies['salesbot_session']}"
        # A state of this browser's, pending: hostile callbacks must not spend it unless they are valid.
        await web.browser.get("/shopify/acme-7cu19ngr/login", follow_redirects=False)
        yield Hostile(web, cookie, replay_shopify, replay_facebook)


def with_cookie(h: Hostile, use: bool) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", h.cookie.encode())] if use else []


# --- strategies ----------------------------------------------------------------------------------------

NAMES = st.sampled_from(["code", "shop", "state", "timestamp", "hmac", "host", "signature", "error", "x", "hmac[]"])
VALUES = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    st.just("A" * 70_000),
    st.sampled_from(["1337178173", str(10**15), "-1", "evil.com", "acme.myshopify.com.evil.com", "%2e%2e", "\\"]),
)
PAIRS = st.lists(st.tuples(NAMES, VALUES), max_size=8)
BAD_SHOPS = st.one_of(
    st.sampled_from(
        [
            "evil.com",
            "acme.myshopify.com.evil.com",
            "acme.myshopify.com@evil.com",
            "user:pass@acme.myshopify.com",
            "acme.myshopify.com/../evil",
            "acme.myshopify.com%2Fevil.com",
            "acme%2emyshopify.com",
            "acme.myshopify%2ecom",
            "acme\\.myshopify.com",
            "\\\\evil.com",
            "//evil.com",
            "https://evil.com/acme.myshopify.com",
            "acme.myshopify.com:443",
            "xn--acme-xyz.myshopify.com.evil",
            "\u0430cme.myshopify.com",  # Cyrillic a
            "acme\u3002myshopify\u3002com",  # ideographic full stops
            "ACME.MYSHOPIFY.COM.",
            "acme.myshopify.com\x00.evil.com",
            "acme.myshopify.com#evil.com",
            "acme.myshopify.com?x=evil.com",
            "-acme.myshopify.com",
            "",
        ]
    ),
    st.text(min_size=1, max_size=80).filter(lambda s: not s.isascii() or any(c in s for c in "./@:\\%?#")),
)


def signed_query(pairs: list[tuple[str, str]], secret: str = SHOPIFY_SECRET) -> bytes:
    message = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return urlencode([*pairs, ("hmac", digest)]).encode()


# --- Shopify callback -----------------------------------------------------------------------------------


@PROPERTY
@given(query=st.binary(max_size=300), cookie=st.booleans())
async def test_shopify_callback_raw_bytes(hostile: Hostile, query: bytes, cookie: bool) -> None:
    await refused(hostile, "GET", "/shopify/callback", query, with_cookie(hostile, cookie))


@PROPERTY
@given(pairs=PAIRS, cookie=st.booleans(), sign=st.booleans())
async def test_shopify_callback_arbitrary_parameters(hostile: Hostile, pairs, cookie: bool, sign: bool) -> None:
    # Signed or not, these carry no state this browser has pending: nothing may pass.
    query = signed_query(pairs) if sign else urlencode(pairs).encode()
    await refused(hostile, "GET", "/shopify/callback", query, with_cookie(hostile, cookie))


@PROPERTY
@given(
    shop=st.one_of(st.just(SHOP), BAD_SHOPS),
    state=st.one_of(st.just("replayed"), st.text(max_size=200)),
    timestamp=st.sampled_from(["now", "stale", "future", "junk"]),
    secret=st.sampled_from([SHOPIFY_SECRET, "wrong-secret", ""]),
    truncate=st.integers(min_value=0, max_value=64),
)
async def test_shopify_callback_forged_stale_replayed(hostile: Hostile, shop, state, timestamp, secret, truncate):
    if state == "replayed":
        state = dict(pair.split("=", 1) for pair in hostile.replay_shopify.split("&"))["state"]
    stamp = {
        "now": str(int(time.time())),
        "stale": str(int(time.time()) - 3600),
        "future": str(int(time.time()) + 3600),
    }
    pairs = [("code", "0907a61c0c8d55e99db179b68161bc00"), ("shop", shop), ("state", state)]
    pairs.append(("timestamp", stamp.get(timestamp, "12ab")))
    query = signed_query(pairs, secret)
    if truncate:
        query = query[: max(0, len(query) - truncate)]
    # Signed with our secret for the store of the browser's own account: "already connected" at most.
    owned = secret == SHOPIFY_SECRET and shop == SHOP
    await refused(hostile, "GET", "/shopify/callback", query, with_cookie(hostile, True), already_connected=owned)


async def test_the_real_callback_replayed_is_refused(hostile: Hostile) -> None:
    query = hostile.replay_shopify.encode()
    code = await refused(hostile, "GET", "/shopify/callback", query, with_cookie(hostile, False))
    assert code in ("invalid_state", "stale_timestamp")
    # The browser that finished it, with the Back button: the store is there already, and nothing changes.
    code = await refused(hostile, "GET", "/shopify/callback", query, with_cookie(hostile, True), already_connected=True)
    assert code == "already_connected"


# --- Shopify login and shop names: no redirect anywhere but the configured stand-in -------------------------


@PROPERTY
@given(shop=BAD_SHOPS, form=st.booleans())
async def test_bad_shop_names_never_redirect_or_call_out(hostile: Hostile, shop: str, form: bool) -> None:
    if form:
        await refused(hostile, "GET", "/shopify/login", urlencode({"shop": shop}).encode())
    else:
        before = len(hostile.web.outbound.urls)
        status, headers, _ = await asgi(hostile.web.app, "GET", f"/shopify/{shop}/login")
        assert 400 <= status < 500 and b"location" not in headers, (shop, status)
        assert len(hostile.web.outbound.urls) == before


@PROPERTY
@given(shop=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20))
async def test_every_login_redirect_goes_to_the_configured_provider(hostile: Hostile, shop: str) -> None:
    status, headers, _ = await asgi(hostile.web.app, "GET", f"/shopify/{shop}/login", b"next=https://evil.com")
    if status == 302:
        location = headers[b"location"].decode()
        assert location.startswith(f"{SANDBOX}/shopify/{shop}.myshopify.com/admin/oauth/authorize?"), location
    else:
        assert status == 400 and b"location" not in headers


async def test_no_route_redirects_to_a_url_from_the_request(hostile: Hostile) -> None:
    evil = b"next=https://evil.com&redirect_uri=https://evil.com&return_to=//evil.com&url=https://evil.com"
    for path in ("/", "/shopify/login", "/facebook/login", "/shopify/acme/login", "/healthz"):
        _status, headers, _ = await asgi(hostile.web.app, "GET", path, evil + b"&shop=acme")
        location = headers.get(b"location", b"").decode()
        assert "evil" not in location, (path, location)
        assert location == "" or location.startswith(("/", SANDBOX)), (path, location)
        assert not location.startswith(("//", "/\\")), (path, location)


# --- Shopify webhook ------------------------------------------------------------------------------------

TOPICS = st.sampled_from(["app/uninstalled", "shop/redact", "customers/redact", "", "x" * 300])


def webhook_signature(body: bytes, secret: str = SHOPIFY_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@PROPERTY
@given(
    body=st.one_of(st.binary(max_size=200), st.just(json.dumps({"shop_domain": SHOP}).encode())),
    signature=st.one_of(
        st.none(),
        st.binary(max_size=60),
        st.sampled_from(["forged-wrong-secret", "truncated", "other-body", "hex-not-base64"]),
    ),
    topic=TOPICS,
    shop=st.one_of(st.just(SHOP), BAD_SHOPS),
)
async def test_shopify_webhook_forged(hostile: Hostile, body: bytes, signature, topic: str, shop: str) -> None:
    if signature == "forged-wrong-secret":
        signature = webhook_signature(body, "wrong-secret").encode()
    elif signature == "truncated":
        signature = webhook_signature(body)[:-4].encode()
    elif signature == "other-body":
        signature = webhook_signature(body + b"x").encode()
    elif signature == "hex-not-base64":
        signature = hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).hexdigest().encode()
    headers = [(b"x-shopify-topic", topic.encode()), (b"x-shopify-webhook-id", b"wh-hostile")]
    headers.append((b"x-shopify-shop-domain", shop.encode("utf-8", "surrogateescape")))
    if signature is not None:
        headers.append((b"x-shopify-hmac-sha256", signature))
    code = await refused(hostile, "POST", "/shopify/webhooks", b"", headers, body)
    assert code == "invalid_webhook_signature"


@PROPERTY
@given(topic=TOPICS, shop=st.one_of(st.just(SHOP), BAD_SHOPS), webhook_id=st.sampled_from(["", "x" * 256, "replay"]))
async def test_shopify_webhook_signed_but_malformed_or_replayed(hostile: Hostile, topic, shop, webhook_id) -> None:
    """Correctly signed: a bad topic, id or shop is a 400; a replayed id a harmless 200 that changes nothing.
    (Hostile input with the real secret is beyond any attacker; this checks the checks after the signature.)"""
    # Every field each topic documents (the shop resource and the compliance bodies), so that the first
    # delivery is a valid app/uninstalled and the replay is valid under whichever topic it names.
    body = json.dumps(
        {
            "id": 1,
            "myshopify_domain": SHOP,
            "shop_id": 1,
            "shop_domain": SHOP,
            "customer": {"id": 2},
            "orders_to_redact": [],
            "orders_requested": [],
            "data_request": {"id": 3},
        }
    ).encode()
    if webhook_id == "replay":
        first = [
            (b"x-shopify-topic", b"app/uninstalled"),
            (b"x-shopify-webhook-id", b"wh-replayed"),
            (b"x-shopify-hmac-sha256", webhook_signature(body).encode()),
            (b"content-type", b"application/json"),
        ]
        await asgi(hostile.web.app, "POST", "/shopify/webhooks", b"", first, body)  # delivered once (may delete)
    headers = [
        (b"x-shopify-topic", topic.encode()),
        (b"x-shopify-webhook-id", (webhook_id if webhook_id != "replay" else "wh-replayed").encode()),
        (b"x-shopify-shop-domain", shop.encode("utf-8", "surrogateescape")),
        (b"x-shopify-hmac-sha256", webhook_signature(body).encode()),
    ]
    before = await snapshot(hostile.web.store)
    status, response_headers, response_body = await asgi(
        hostile.web.app, "POST", "/shopify/webhooks", b"", headers, body
    )
    if webhook_id == "replay" and topic and shop == SHOP:
        assert status == 200 and json.loads(response_body)["status"] == "duplicate", response_body
    else:
        assert status == 400 and stable_code(response_headers, response_body) == "invalid_callback", response_body
    assert await snapshot(hostile.web.store) == before


# --- Facebook callback, deauthorize, data deletion ------------------------------------------------------------


@PROPERTY
@given(query=st.one_of(st.binary(max_size=300), PAIRS.map(lambda p: urlencode(p).encode())), cookie=st.booleans())
async def test_facebook_callback_hostile(hostile: Hostile, query: bytes, cookie: bool) -> None:
    await refused(hostile, "GET", "/facebook/callback", query, with_cookie(hostile, cookie), cancel=True)


async def test_facebook_callback_replayed_is_refused(hostile: Hostile) -> None:
    code = await refused(
        hostile, "GET", "/facebook/callback", hostile.replay_facebook.encode(), with_cookie(hostile, True)
    )
    assert code == "invalid_state"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed_request(payload: dict, secret: str = FACEBOOK_SECRET, *, digest=hashlib.sha256) -> str:
    encoded = b64url(json.dumps(payload).encode())
    return f"{b64url(hmac.new(secret.encode(), encoded.encode(), digest).digest())}.{encoded}"


SIGNED_REQUESTS = st.one_of(
    st.text(max_size=120),
    st.builds(
        lambda payload, secret: signed_request(payload, secret),
        st.fixed_dictionaries({"algorithm": st.just("HMAC-SHA256"), "user_id": st.just("9001")}),
        st.sampled_from(["wrong-secret", "", FACEBOOK_SECRET + "x"]),
    ),
    st.builds(  # signed with our secret, but a wrong algorithm or no usable id
        signed_request,
        st.one_of(
            st.fixed_dictionaries(
                {"algorithm": st.sampled_from(["none", "HMAC-SHA1", "RS256", ""]), "user_id": st.just("9001")}
            ),
            st.fixed_dictionaries(
                {"algorithm": st.just("HMAC-SHA256"), "user_id": st.sampled_from(["9001x", "-1", "9" * 40, "१२३"])}
            ),
            st.fixed_dictionaries({"algorithm": st.just("HMAC-SHA256")}),
        ),
    ),
    st.just(signed_request({"algorithm": "HMAC-SHA256", "user_id": "9001"}, digest=hashlib.sha1)),
    st.just(signed_request({"algorithm": "HMAC-SHA256", "user_id": "9001"})[:-3]),  # truncated payload
    st.just("A" * 20_000),
)


@PROPERTY
@given(
    signed=SIGNED_REQUESTS,
    path=st.sampled_from(["/facebook/deauthorize", "/facebook/data-deletion"]),
    shape=st.sampled_from(["form", "twice", "raw"]),
    raw=st.binary(max_size=200),
)
async def test_signed_request_callbacks_hostile(
    hostile: Hostile, signed: str, path: str, shape: str, raw: bytes
) -> None:
    if shape == "form":
        body = urlencode({"signed_request": signed}).encode()
    elif shape == "twice":
        valid = signed_request({"algorithm": "HMAC-SHA256", "user_id": "9001"})
        body = urlencode([("signed_request", valid), ("signed_request", signed)]).encode()
    else:
        body = raw
    headers = [(b"content-type", b"application/x-www-form-urlencoded")]
    await refused(hostile, "POST", path, b"", headers, body, allowed={"invalid_signed_request", "http_error"})


@PROPERTY
@given(body=st.binary(max_size=300), boundary=st.sampled_from([b"x", b"", b"\xff\xfe"]))
async def test_signed_request_callbacks_garbage_multipart(hostile: Hostile, body: bytes, boundary: bytes) -> None:
    headers = [(b"content-type", b"multipart/form-data; boundary=" + boundary)]
    await refused(
        hostile, "POST", "/facebook/deauthorize", b"", headers, body, allowed={"invalid_signed_request", "http_error"}
    )


async def test_huge_values_are_refused_quickly(hostile: Hostile) -> None:
    huge = quote("A" * 1_000_000).encode()
    await refused(hostile, "GET", "/shopify/callback", b"state=" + huge + b"&hmac=" + huge)
    await refused(hostile, "GET", "/facebook/callback", b"code=" + huge + b"&state=" + huge)
    body = b"signed_request=" + huge
    await refused(
        hostile, "POST", "/facebook/data-deletion", b"", [(b"content-type", b"application/x-www-form-urlencoded")], body
    )
    await refused(hostile, "POST", "/shopify/webhooks", b"", [(b"x-shopify-hmac-sha256", b"x")], b"{" * (2 << 20))
