from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import errors
from service.providers import shopify
from tests import vectors
from tests.providers.helpers import Fake, Respond, answer, assert_hidden

# Published vectors, from docs/providers.md.
SECRET = vectors.SHOPIFY_SECRET
VECTOR_PARAMS = vectors.SHOPIFY_PARAMS
VECTOR_MESSAGE = vectors.SHOPIFY_QUERY
VECTOR_HMAC = vectors.SHOPIFY_HMAC
VECTOR2_PARAMS = vectors.SHOPIFY_NO_STATE_PARAMS
VECTOR2_HMAC = vectors.SHOPIFY_NO_STATE_HMAC
VECTOR_NOW = 1337178173.0 + 5
DOMAIN_RE = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")

ADMIN = "https://acme.myshopify.com"
CLIENT_ID = "app-key-123"
CLIENT_SECRET = "shpss_client_secret_value"
CODE = "auth-code-0907a61c"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def sign(params: list[tuple[str, str]], secret: str = SECRET) -> list[tuple[str, str]]:
    # Independent of the code under test: Shopify's rule written out by hand.
    message = "&".join(f"{k}={v}" for k, v in sorted(params))
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return [*params, ("hmac", digest)]


def with_value(params: list[tuple[str, str]], key: str, value: str) -> list[tuple[str, str]]:
    return [(k, value if k == key else v) for k, v in params]


# --- shop names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("acme", "acme.myshopify.com"),
        ("ACME", "acme.myshopify.com"),
        ("acme.myshopify.com", "acme.myshopify.com"),
        ("Acme-7cu19ngr.MyShopify.COM", "acme-7cu19ngr.myshopify.com"),
        ("https://acme.myshopify.com", "acme.myshopify.com"),
        ("https://acme.myshopify.com/", "acme.myshopify.com"),
        ("http://acme.myshopify.com/", "acme.myshopify.com"),
        ("HTTPS://ACME.MYSHOPIFY.COM", "acme.myshopify.com"),
        ("  acme.myshopify.com\n", "acme.myshopify.com"),
        ("acme/", "acme.myshopify.com"),
        ("admin.shopify.com/store/acme", "acme.myshopify.com"),
        ("https://admin.shopify.com/store/Acme-2/", "acme-2.myshopify.com"),
        ("0shop", "0shop.myshopify.com"),
        ("a" * 63, "a" * 63 + ".myshopify.com"),
    ],
)
def test_normalize_shop_accepts(raw: str, expected: str) -> None:
    assert shopify.normalize_shop(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "evil.com",
        "acme.myshopify.com.evil.com",
        "a@evil.com",
        "acme@evil.myshopify.com",
        "acme.myshopify.com/path",
        "acme.myshopify.com:443",
        "acme.myshopify.com//",
        "%2e",
        "acme%2e.myshopify.com",
        "\u0430cme",  # Cyrillic small a
        "\u212acme",  # Kelvin sign: lower-cases to an ASCII "k"
        "acme\uff0emyshopify.com",  # full-width full stop
        "-acme",
        "..",
        "acme..myshopify.com",
        ".myshopify.com",
        "acme\\evil",
        "ac me",
        "ac\nme",
        "acme?x=1",
        "acme.myshopify.com?x=1",
        "acme.myshopify.com#x",
        "https://https://acme",
        "ftp://acme",
        "//acme",
        "acme.shopify.com",
        "acme.myshopify.co",
        "sub.acme.myshopify.com",
        "a" * 64,
        "admin.shopify.com/store/",
        "admin.shopify.com/store/acme/settings",
        "evil.com/store/acme",
        "acme_shop",
    ],
)
def test_normalize_shop_rejects(raw: str) -> None:
    with pytest.raises(errors.InvalidShop):
        shopify.normalize_shop(raw)


def test_invalid_shop_message_echoes_short_ascii_only() -> None:
    with pytest.raises(errors.InvalidShop) as short:
        shopify.normalize_shop("evil.com")
    assert "'evil.com' is not a valid Shopify shop name" in str(short.value)
    for raw in ("x" * 101, "\u0430cme", "ac\x00me"):
        with pytest.raises(errors.InvalidShop) as hidden:
            shopify.normalize_shop(raw)
        assert raw not in str(hidden.value)
        assert str(hidden.value).startswith("the shop name is not a valid Shopify shop name")


_pieces = st.sampled_from(
    [
        "https://",
        "http://",
        "admin.shopify.com/store/",
        ".myshopify.com",
        "/",
        ".",
        "-",
        "@",
        ":443",
        "%2e",
        " ",
    ]
)
_near_valid = st.lists(
    st.one_of(_pieces, st.text(alphabet="aAz09-._/\\:@?#%\u0430\u212a", max_size=8)), max_size=6
).map("".join)


@given(st.one_of(st.text(), _near_valid))
def test_normalize_shop_only_yields_shop_domains(raw: str) -> None:
    try:
        domain = shopify.normalize_shop(raw)
    except errors.InvalidShop:
        return
    assert DOMAIN_RE.fullmatch(domain)
    assert len(domain) <= 63 + len(".myshopify.com")
    assert shopify.normalize_shop(domain) == domain


def test_shop_key() -> None:
    assert shopify.shop_key("acme.myshopify.com") == "acme"
    assert shopify.shop_key("acme-7cu19ngr.myshopify.com") == "acme-7cu19ngr"
    with pytest.raises(errors.InvalidShop):
        shopify.shop_key("evil.com")


def test_admin_base_url() -> None:
    assert shopify.admin_base_url("https://{shop}", "acme.myshopify.com") == "https://acme.myshopify.com"
    assert shopify.admin_base_url("https://{shop}/", "ACME") == "https://acme.myshopify.com"
    sandbox = "http://127.0.0.1:8001/shopify/{shop}/"
    assert shopify.admin_base_url(sandbox, "acme") == "http://127.0.0.1:8001/shopify/acme.myshopify.com"
    with pytest.raises(errors.InvalidShop):
        shopify.admin_base_url("https://{shop}", "acme.myshopify.com.evil.com")


def test_authorize_url() -> None:
    url = shopify.authorize_url(
        admin_base=ADMIN,
        client_id="key",
        scopes=["read_products", "write_orders"],
        redirect_uri="https://app.example/shopify/callback",
        state="s 1&x",
    )
    assert url == (
        "https://acme.myshopify.com/admin/oauth/authorize?client_id=key&scope=read_products%2Cwrite_orders"
        "&redirect_uri=https%3A%2F%2Fapp.example%2Fshopify%2Fcallback&state=s+1%26x"
    )
    assert parse_qsl(urlsplit(url).query) == [
        ("client_id", "key"),
        ("scope", "read_products,write_orders"),
        ("redirect_uri", "https://app.example/shopify/callback"),
        ("state", "s 1&x"),
    ]


# --- callback HMAC -------------------------------------------------------------------------------


def test_callback_message_vector() -> None:
    shuffled = [
        ("timestamp", "1337178173"),
        *VECTOR_PARAMS[:3][::-1],
        ("hmac", VECTOR_HMAC),
        ("signature", "x"),
    ]
    assert shopify.callback_message(shuffled) == VECTOR_MESSAGE


def test_callback_message_keeps_values_as_received() -> None:
    params = [("state", "a b&c=d%26"), ("code", "é")]
    assert shopify.callback_message(params) == "code=é&state=a b&c=d%26"


def test_verify_callback_vector() -> None:
    params = [*VECTOR_PARAMS, ("hmac", VECTOR_HMAC)]
    assert shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW) == dict(params)


def test_second_vector_signs_and_then_lacks_state() -> None:
    message = vectors.VECTORS["shopify_callback_no_state.query"]
    assert shopify.callback_message(VECTOR2_PARAMS) == message
    assert hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest() == VECTOR2_HMAC
    with pytest.raises(errors.InvalidCallback, match="state"):
        shopify.verify_callback([*VECTOR2_PARAMS, ("hmac", VECTOR2_HMAC)], secret=SECRET, now=VECTOR_NOW)


@pytest.mark.parametrize("key", ["code", "shop", "state", "timestamp"])
def test_verify_callback_tampered_param(key: str) -> None:
    value = dict(VECTOR_PARAMS)[key]
    tampered = value[:-1] + ("4" if value[-1] != "4" else "5")
    params = [*with_value(VECTOR_PARAMS, key, tampered), ("hmac", VECTOR_HMAC)]
    with pytest.raises(errors.InvalidSignature):
        shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW)


def test_verify_callback_added_param_breaks_signature() -> None:
    params = [*VECTOR_PARAMS, ("extra", "1"), ("hmac", VECTOR_HMAC)]
    with pytest.raises(errors.InvalidSignature):
        shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW)


def test_verify_callback_wrong_secret() -> None:
    with pytest.raises(errors.InvalidSignature):
        shopify.verify_callback([*VECTOR_PARAMS, ("hmac", VECTOR_HMAC)], secret="hush2", now=VECTOR_NOW)


@pytest.mark.parametrize(
    "bad_hmac",
    [VECTOR_HMAC.upper(), VECTOR_HMAC[:-1], VECTOR_HMAC[:32], VECTOR_HMAC + "0", " " + VECTOR_HMAC, "z" * 64],
)
def test_verify_callback_malformed_hmac(bad_hmac: str) -> None:
    with pytest.raises(errors.InvalidSignature):
        shopify.verify_callback([*VECTOR_PARAMS, ("hmac", bad_hmac)], secret=SECRET, now=VECTOR_NOW)


@pytest.mark.parametrize("key", ["shop", "hmac", "code"])
def test_verify_callback_duplicate_param(key: str) -> None:
    params = [*VECTOR_PARAMS, ("hmac", VECTOR_HMAC)]
    params.append((key, dict(params)[key]))  # even an identical repeat is refused
    with pytest.raises(errors.InvalidCallback, match=key):
        shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW)


def test_verify_callback_duplicate_checked_before_signature() -> None:
    # A repeated unsigned-looking key must not slip past: duplicates are judged first.
    params = [*VECTOR_PARAMS, ("hmac", "0" * 64), ("state", "other")]
    with pytest.raises(errors.InvalidCallback):
        shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW)


@pytest.mark.parametrize("missing", ["hmac", "shop", "code", "state", "timestamp"])
def test_verify_callback_missing_param(missing: str) -> None:
    params = [(k, v) for k, v in [*VECTOR_PARAMS, ("hmac", VECTOR_HMAC)] if k != missing]
    with pytest.raises(errors.InvalidCallback) as caught:
        shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW)
    assert f"no {missing} parameter" in str(caught.value)


@pytest.mark.parametrize("empty", ["shop", "code", "state"])
def test_verify_callback_empty_param_counts_as_missing(empty: str) -> None:
    params = sign(with_value(VECTOR_PARAMS, empty, ""))
    with pytest.raises(errors.InvalidCallback, match=f"no {empty} parameter"):
        shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW)


@pytest.mark.parametrize(
    ("now", "ok"),
    [
        (1337178173.0, True),
        (1337178173.0 + 90, True),
        (1337178173.0 - 90, True),
        (1337178173.0 + 91, False),  # stale
        (1337178173.0 - 91, False),  # from the future
        (1337178173.0 + 86400, False),
    ],
)
def test_verify_callback_timestamp_window(now: float, ok: bool) -> None:
    params = [*VECTOR_PARAMS, ("hmac", VECTOR_HMAC)]
    if ok:
        assert shopify.verify_callback(params, secret=SECRET, now=now)["timestamp"] == "1337178173"
    else:
        with pytest.raises(errors.StaleRequest):
            shopify.verify_callback(params, secret=SECRET, now=now)


def test_verify_callback_custom_skew() -> None:
    params = [*VECTOR_PARAMS, ("hmac", VECTOR_HMAC)]
    assert shopify.verify_callback(params, secret=SECRET, now=1337178173.0 + 3600, max_skew=86400)
    with pytest.raises(errors.StaleRequest):
        shopify.verify_callback(params, secret=SECRET, now=1337178173.0 + 3600)


@pytest.mark.parametrize("timestamp", ["soon", "1337178173.5", "-1", "+1337178173", " 1337178173", "1_337"])
def test_verify_callback_timestamp_not_an_int(timestamp: str) -> None:
    params = sign(with_value(VECTOR_PARAMS, "timestamp", timestamp))
    with pytest.raises(errors.StaleRequest):
        shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW)


def test_verify_callback_signature_checked_before_timestamp() -> None:
    params = [*with_value(VECTOR_PARAMS, "timestamp", "1"), ("hmac", VECTOR_HMAC)]
    with pytest.raises(errors.InvalidSignature):
        shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW)


HOST = "YWRtaW4uc2hvcGlmeS5jb20vc3RvcmUvc29tZS1zaG9w"


def test_verify_callback_host_is_signed() -> None:
    params = sign([*VECTOR_PARAMS, ("host", HOST)])
    assert shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW)["host"] == HOST


def test_verify_callback_unsigned_host_fails() -> None:
    # Signed without host, then host added: the libraries that drop host would pass this.
    params = [*VECTOR_PARAMS, ("host", HOST), ("hmac", VECTOR_HMAC)]
    with pytest.raises(errors.InvalidSignature):
        shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW)


def test_verify_callback_ignores_signature_param() -> None:
    params = [*VECTOR_PARAMS, ("signature", "legacy"), ("hmac", VECTOR_HMAC)]
    assert shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW)["code"] == VECTOR_PARAMS[0][1]


def test_verify_callback_values_signed_as_received() -> None:
    params = sign(with_value(VECTOR_PARAMS, "state", "a&b=c %26"))
    assert shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW)["state"] == "a&b=c %26"
    reencoded = with_value(params, "state", "a%26b%3Dc+%2526")
    with pytest.raises(errors.InvalidSignature):
        shopify.verify_callback(reencoded, secret=SECRET, now=VECTOR_NOW)


def test_verify_callback_does_not_normalize_shop() -> None:
    params = sign(with_value(VECTOR_PARAMS, "shop", "Some-Shop.MyShopify.com"))
    assert shopify.verify_callback(params, secret=SECRET, now=VECTOR_NOW)["shop"] == "Some-Shop.MyShopify.com"


# --- webhooks and scopes -------------------------------------------------------------------------

BODY = b'{"id":820982911946154508,"domain":"acme.myshopify.com"}'
BODY_SIGNATURE = base64.b64encode(hmac.new(b"hush", BODY, hashlib.sha256).digest()).decode()


def test_webhook_signature() -> None:
    assert shopify.webhook_signature(BODY, SECRET) == BODY_SIGNATURE


def test_verify_webhook_accepts() -> None:
    assert shopify.verify_webhook(BODY, BODY_SIGNATURE, secret=SECRET) is None


@pytest.mark.parametrize(
    ("body", "header"),
    [
        (BODY, None),
        (BODY, ""),
        (BODY, BODY_SIGNATURE[:-2]),
        (BODY, BODY_SIGNATURE + " "),
        (BODY, BODY_SIGNATURE.lower()),
        (BODY, "é" + BODY_SIGNATURE),
        (BODY + b" ", BODY_SIGNATURE),
        (BODY, base64.b64encode(hmac.new(b"other", BODY, hashlib.sha256).digest()).decode()),
    ],
)
def test_verify_webhook_rejects(body: bytes, header: str | None) -> None:
    with pytest.raises(errors.WebhookUnauthorized):
        shopify.verify_webhook(body, header, secret=SECRET)


@pytest.mark.parametrize(
    ("requested", "granted", "expected"),
    [
        (["read_products"], "read_products", ["read_products"]),
        (
            ["read_products", "write_orders"],
            "write_orders, read_products,",
            ["write_orders", "read_products"],
        ),
        (["read_orders", "write_orders"], "write_orders", ["write_orders"]),
        (
            ["unauthenticated_read_checkouts"],
            "unauthenticated_write_checkouts",
            ["unauthenticated_write_checkouts"],
        ),
        ([], "", []),
    ],
)
def test_check_scopes_granted(requested: list[str], granted: str, expected: list[str]) -> None:
    assert shopify.check_scopes(requested, granted) == expected


@pytest.mark.parametrize(
    ("requested", "granted", "missing"),
    [
        (["write_orders"], "read_orders", ["write_orders"]),
        (["read_products", "read_orders"], "read_products", ["read_orders"]),
        (["read_products", "write_customers"], "", ["read_products", "write_customers"]),
        (["read_orders"], "write_order", ["read_orders"]),
        (["unauthenticated_read_checkouts"], "write_checkouts", ["unauthenticated_read_checkouts"]),
    ],
)
def test_check_scopes_missing(requested: list[str], granted: str, missing: list[str]) -> None:
    with pytest.raises(errors.ScopeMismatch) as caught:
        shopify.check_scopes(requested, granted)
    assert ", ".join(missing) in str(caught.value)
    for scope in set(requested) - set(missing):
        assert scope not in str(caught.value)


# --- the token endpoint --------------------------------------------------------------------------


def raw_answer(status: int, content: bytes) -> Respond:
    return lambda request: httpx.Response(status, content=content)


def fails_with(exc: Exception) -> Respond:
    def respond(request: httpx.Request) -> httpx.Response:
        raise exc

    return respond


NON_EXPIRING = {"access_token": "shpat_nonexpiring_token", "scope": "read_products,write_orders"}
EXPIRING = {
    "access_token": "shpat_expiring_token",
    "scope": "read_products,write_orders",
    "expires_in": 3600,
    "refresh_token": "shprt_refresh_token",
    "refresh_token_expires_in": 7776000,
}


async def exchange(fake: Fake, now: datetime = NOW) -> shopify.ShopifyToken:
    async with fake.client() as client:
        return await shopify.exchange_code(
            client, admin_base=ADMIN, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=CODE, now=now
        )


@pytest.mark.asyncio
async def test_exchange_code_sends_form_and_parses_non_expiring() -> None:
    fake = Fake(answer(200, NON_EXPIRING))
    token = await exchange(fake)
    assert len(fake.requests) == 1
    assert str(fake.requests[0].url) == "https://acme.myshopify.com/admin/oauth/access_token"
    assert fake.form() == {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "code": CODE,
        "expiring": "1",
    }
    assert token.access_token == "shpat_nonexpiring_token"
    assert token.scopes == ["read_products", "write_orders"]
    assert token.expires_at is None
    assert token.refresh_token is None
    assert token.refresh_expires_at is None


@pytest.mark.asyncio
async def test_exchange_code_expiring() -> None:
    token = await exchange(Fake(answer(200, EXPIRING)))
    assert token.access_token == "shpat_expiring_token"
    assert token.refresh_token == "shprt_refresh_token"
    assert token.expires_at == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    assert token.refresh_expires_at == datetime(2027, 1, 30, 12, 0, tzinfo=UTC)


@pytest.mark.asyncio
async def test_exchange_code_converts_now_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    token = await exchange(Fake(answer(200, EXPIRING)), now=datetime(2026, 11, 1, 13, 0, tzinfo=paris))
    assert token.expires_at == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    assert token.expires_at is not None
    assert token.expires_at.utcoffset() == timedelta(0)


@pytest.mark.asyncio
async def test_exchange_code_refuses_naive_now_before_sending() -> None:
    fake = Fake(answer(200, EXPIRING))
    with pytest.raises(ValueError, match="timezone-aware"):
        await exchange(fake, now=datetime(2026, 11, 1, 12, 0))
    assert fake.requests == []


@pytest.mark.asyncio
async def test_refresh_token_without_expires_in_still_expires() -> None:
    body = {k: v for k, v in EXPIRING.items() if k != "expires_in"}
    token = await exchange(Fake(answer(200, body)))
    assert token.expires_at == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)


@pytest.mark.asyncio
async def test_token_repr_hides_tokens() -> None:
    token = await exchange(Fake(answer(200, EXPIRING)))
    assert "shpat_expiring_token" not in repr(token)
    assert "shprt_refresh_token" not in repr(token)
    assert "read_products" in repr(token)


@pytest.mark.parametrize(
    ("respond", "message"),
    [
        (
            answer(400, {"error": "invalid_request", "error_description": f"code {CODE} was not found"}),
            "Shopify answered 400 to the token exchange (invalid_request)",
        ),
        (answer(400, {"error": f"bad {CODE}"}), "Shopify answered 400 to the token exchange"),
        (raw_answer(500, b"<html>oops</html>"), "Shopify answered 500 to the token exchange"),
        (lambda r: httpx.Response(302, headers={"location": "https://evil.example/"}), "answered 302"),
        (raw_answer(200, b"<html>not json</html>"), "not valid JSON"),
        (raw_answer(200, b'{"access_token": "shpat_trunc'), "not valid JSON"),
        (raw_answer(200, b"\xff\xfe\x00"), "not valid JSON"),
        (answer(200, ["access_token"]), "not a JSON object"),
        (answer(200, {"scope": "read_products"}), "the token exchange response had no access_token"),
        (answer(200, {"access_token": "", "scope": "read_products"}), "had no access_token"),
        (answer(200, {"access_token": "shpat_x"}), "had no scope"),
        (answer(200, {**EXPIRING, "expires_in": "soon"}), "unusable expires_in"),
        (answer(200, {**EXPIRING, "expires_in": -5}), "unusable expires_in"),
        (answer(200, {**EXPIRING, "expires_in": 10**12}), "unusable expires_in"),
        (answer(200, {**EXPIRING, "refresh_token_expires_in": 1e300}), "unusable refresh_token_expires_in"),
        (answer(200, {**EXPIRING, "refresh_token": 7}), "unusable refresh_token"),
    ],
)
@pytest.mark.asyncio
async def test_exchange_code_failures(respond: Respond, message: str) -> None:
    fake = Fake(respond)
    with pytest.raises(errors.ProviderError) as caught:
        await exchange(fake)
    assert type(caught.value) is errors.ProviderError
    assert message in str(caught.value)
    assert "was not found" not in str(caught.value)
    assert len(fake.requests) == 1  # a redirect is not followed with our secret
    assert_hidden(caught.value, CODE, CLIENT_SECRET, "shpat_trunc")


@pytest.mark.asyncio
async def test_granted_scopes_follow_shopifys_grammar() -> None:
    real = "read_products,write_orders,unauthenticated_read_product_listings,read_all_orders,customer_read_orders"
    assert (await exchange(Fake(answer(200, {**EXPIRING, "scope": real})))).scopes == real.split(",")
    for bad in (
        "read_products,read orders",
        "read_products,../x",
        "Read_products",
        "read_\x1b[2J",
        "read_" + "x" * 100,
    ):
        with pytest.raises(errors.InvalidProviderId) as caught:
            await exchange(Fake(answer(200, {**EXPIRING, "scope": bad})))
        assert caught.value.code == "invalid_provider_id" and "\x1b" not in caught.value.message


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout(f"timed out reading code={CODE}"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.ConnectError(f"refused client_secret={CLIENT_SECRET}"),
        httpx.RemoteProtocolError("peer closed"),
    ],
)
@pytest.mark.asyncio
async def test_exchange_code_unavailable(exc: Exception) -> None:
    with pytest.raises(errors.ProviderUnavailable) as caught:
        await exchange(Fake(fails_with(exc)))
    assert type(exc).__name__ in str(caught.value)
    assert caught.value.__cause__ is None
    assert_hidden(caught.value, CODE, CLIENT_SECRET)


class TokenEndpoint:
    """A tiny Shopify token endpoint: checks the client, answers a new pair, refresh tokens are single-use."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.live_refresh = {"shprt_first"}
        self.issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode()))
        self.requests.append(form)
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return httpx.Response(400, json={"error": "invalid_client", "error_description": "bad client"})
        if form.get("grant_type") != "refresh_token":
            return httpx.Response(400, json={"error": "unsupported_grant_type"})
        if form.get("refresh_token") not in self.live_refresh:
            return httpx.Response(400, json={"error": "invalid_grant", "error_description": "token used"})
        self.live_refresh.discard(form["refresh_token"])
        self.issued += 1
        refresh = f"shprt_new_{self.issued}"
        self.live_refresh.add(refresh)
        return httpx.Response(
            200, json={**EXPIRING, "access_token": f"shpat_new_{self.issued}", "refresh_token": refresh}
        )


async def refresh(transport: Callable[[httpx.Request], httpx.Response], refresh_token: str) -> shopify.ShopifyToken:
    async with httpx.AsyncClient(transport=httpx.MockTransport(transport)) as client:
        return await shopify.refresh_access_token(
            client,
            admin_base=ADMIN,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            refresh_token=refresh_token,
            now=NOW,
        )


@pytest.mark.asyncio
async def test_refresh_sends_form_and_old_token_is_single_use() -> None:
    endpoint = TokenEndpoint()
    token = await refresh(endpoint, "shprt_first")
    assert endpoint.requests[0] == {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "grant_type": "refresh_token",
        "refresh_token": "shprt_first",
    }
    assert (token.access_token, token.refresh_token) == ("shpat_new_1", "shprt_new_1")
    assert token.expires_at == NOW + timedelta(hours=1)
    with pytest.raises(errors.TokenRevoked) as caught:
        await refresh(endpoint, "shprt_first")
    assert isinstance(caught.value, errors.ProviderError)
    assert_hidden(caught.value, "shprt_first", CLIENT_SECRET)
    assert (await refresh(endpoint, "shprt_new_1")).refresh_token == "shprt_new_2"


@pytest.mark.parametrize("status", [400, 401])
@pytest.mark.asyncio
async def test_refresh_invalid_grant_is_revoked(status: int) -> None:
    with pytest.raises(errors.TokenRevoked):
        await refresh(Fake(answer(status, {"error": "invalid_grant"})), "shprt_old")


@pytest.mark.parametrize(
    "respond",
    [
        answer(400, {"error": "invalid_client", "error_description": "shprt_old"}),
        answer(500, {"error": "invalid_grant"}),
        answer(403, {"error": "invalid_grant"}),
        raw_answer(401, b"not json"),
        answer(200, {"refresh_token": "shprt_x", "scope": ""}),
    ],
)
@pytest.mark.asyncio
async def test_refresh_other_failures_are_provider_errors(respond: Respond) -> None:
    with pytest.raises(errors.ProviderError) as caught:
        await refresh(Fake(respond), "shprt_old")
    assert not isinstance(caught.value, errors.TokenRevoked)
    assert_hidden(caught.value, "shprt_old", CLIENT_SECRET)


@pytest.mark.asyncio
async def test_refresh_timeout() -> None:
    with pytest.raises(errors.ProviderUnavailable) as caught:
        await refresh(Fake(fails_with(httpx.ReadTimeout("slow"))), "shprt_old")
    assert_hidden(caught.value, "shprt_old", CLIENT_SECRET)


@pytest.mark.asyncio
async def test_migrate_to_expiring_sends_token_exchange() -> None:
    fake = Fake(answer(200, EXPIRING))
    async with fake.client() as client:
        token = await shopify.migrate_to_expiring(
            client,
            admin_base=ADMIN,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            access_token="shpat_old_forever",
            now=NOW,
        )
    assert str(fake.requests[0].url) == "https://acme.myshopify.com/admin/oauth/access_token"
    assert fake.form() == {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": "shpat_old_forever",
        "subject_token_type": "urn:shopify:params:oauth:token-type:offline-access-token",
        "requested_token_type": "urn:shopify:params:oauth:token-type:offline-access-token",
        "expiring": "1",
    }
    assert token.refresh_token == "shprt_refresh_token"
    assert token.expires_at == NOW + timedelta(seconds=3600)


@pytest.mark.asyncio
async def test_migrate_failure_hides_old_token() -> None:
    fake = Fake(answer(400, {"error": "invalid_subject_token", "error_description": "shpat_old_forever"}))
    async with fake.client() as client:
        with pytest.raises(errors.ProviderError) as caught:
            await shopify.migrate_to_expiring(
                client,
                admin_base=ADMIN,
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                access_token="shpat_old_forever",
                now=NOW,
            )
    assert "invalid_subject_token" in str(caught.value)
    assert_hidden(caught.value, "shpat_old_forever", CLIENT_SECRET)


# --- token_works ---------------------------------------------------------------------------------


async def works(fake: Fake) -> bool:
    async with fake.client() as client:
        return await shopify.token_works(client, admin_base=ADMIN, access_token="shpat_live", api_version="2026-10")


@pytest.mark.asyncio
async def test_token_works_sends_header() -> None:
    fake = Fake(answer(200, {"shop": {"id": 1}}))
    assert await works(fake) is True
    request = fake.requests[0]
    assert request.method == "GET"
    assert str(request.url) == "https://acme.myshopify.com/admin/api/2026-10/shop.json"
    assert request.headers["X-Shopify-Access-Token"] == "shpat_live"


@pytest.mark.parametrize("status", [401, 403, 404])
@pytest.mark.asyncio
async def test_token_works_false(status: int) -> None:
    assert await works(Fake(answer(status, {"errors": "[API] Invalid API key or access token"}))) is False


@pytest.mark.parametrize("status", [500, 429, 402])
@pytest.mark.asyncio
async def test_token_works_other_status(status: int) -> None:
    with pytest.raises(errors.ProviderError, match=f"Shopify answered {status} to the shop check"):
        await works(Fake(answer(status, {})))


@pytest.mark.asyncio
async def test_token_works_unreachable() -> None:
    with pytest.raises(errors.ProviderUnavailable) as caught:
        await works(Fake(fails_with(httpx.ConnectError("refused"))))
    assert_hidden(caught.value, "shpat_live")
