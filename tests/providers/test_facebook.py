from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import errors
from service.providers import facebook
from tests import vectors
from tests.providers.helpers import assert_hidden

GRAPH = "https://graph.facebook.com"
VERSION = "v25.0"
APP_ID = "1234567890"
APP_SECRET = "fb_app_secret_value"
REDIRECT = "https://app.example/facebook/callback"
CODE = "AQD-fb-auth-code"
SHORT = "EAAshort-user-token"
LONG = "EAAlong-user-token"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

# Published vectors, from docs/providers.md.
PROOF_TOKEN, PROOF_SECRET, PROOF = vectors.PROOF_TOKEN, vectors.PROOF_SECRET, vectors.PROOF
SR_SECRET = vectors.SIGNED_REQUEST_SECRET
SR_VECTOR = vectors.SIGNED_REQUEST
SR_SIG, SR_PAYLOAD = SR_VECTOR.split(".")
SR_EXPECTED = vectors.SIGNED_REQUEST_PAYLOAD


def proof(token: str, secret: str = APP_SECRET) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def test_appsecret_proof_vector() -> None:
    assert facebook.appsecret_proof(PROOF_TOKEN, PROOF_SECRET) == PROOF


def test_dialog_url() -> None:
    url = facebook.dialog_url(
        dialog_base="https://www.facebook.com",
        version=VERSION,
        client_id=APP_ID,
        redirect_uri=REDIRECT,
        state="st&1",
        scopes=["pages_show_list", "pages_messaging"],
    )
    assert url == (
        "https://www.facebook.com/v25.0/dialog/oauth?client_id=1234567890"
        "&redirect_uri=https%3A%2F%2Fapp.example%2Ffacebook%2Fcallback&state=st%261"
        "&scope=pages_show_list%2Cpages_messaging&response_type=code"
    )
    assert dict(parse_qsl(urlsplit(url).query))["state"] == "st&1"


# --- a tiny Graph ---------------------------------------------------------------------------------


def graph_error(
    status: int, code: int, subcode: int | None = None, message: str = "An error"
) -> httpx.Response:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbC"}
    if subcode is not None:
        error["error_subcode"] = subcode
    return httpx.Response(status, json={"error": error})


def page(n: int, *, token: bool = True) -> dict[str, Any]:
    item: dict[str, Any] = {"id": f"10{n}", "name": f"Page {n}", "category": "Shop", "tasks": ["MESSAGING"]}
    if token:
        item["access_token"] = f"EAApage-{n}"
    return item


class FakeGraph:
    """Answers as Graph documents it, records every request, and checks appsecret_proof like Graph does."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.long_lived_expires: int | None = 5183944
        self.revoked: set[str] = set()
        self.cursor_pages: dict[str | None, dict[str, Any]] = {
            None: {
                "data": [page(1), page(2, token=False)],
                "paging": {
                    "cursors": {"before": "b0", "after": "c1"},
                    "next": "https://evil.example/v25.0/me/accounts?after=c1",
                },
            },
            "c1": {
                "data": [page(3)],
                "paging": {
                    "cursors": {"before": "b1", "after": "c2"},
                    "next": "https://evil.example/steal?after=c2",
                },
            },
            "c2": {"data": [page(4)], "paging": {"cursors": {"before": "b2", "after": "c3"}}},
        }

    def params(self, index: int) -> dict[str, str]:
        return dict(parse_qsl(self.requests[index].url.query.decode()))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host != "graph.facebook.com":
            return httpx.Response(200, json={"stolen": True})
        q = dict(parse_qsl(request.url.query.decode()))
        path = request.url.path
        if path == "/v25.0/oauth/access_token":
            if (q.get("client_id"), q.get("client_secret")) != (APP_ID, APP_SECRET):
                return graph_error(400, 1, message="Invalid client_id")
            if q.get("grant_type") == "fb_exchange_token":
                body: dict[str, Any] = {"access_token": LONG, "token_type": "bearer"}
                if self.long_lived_expires is not None:
                    body["expires_in"] = self.long_lived_expires
                return httpx.Response(200, json=body)
            if q.get("redirect_uri") != REDIRECT or q.get("code") != CODE:
                return graph_error(400, 100, message=f"Error validating verification code {q.get('code')}")
            return httpx.Response(
                200, json={"access_token": SHORT, "token_type": "bearer", "expires_in": 3600}
            )
        if path == "/debug_token":
            if q.get("access_token") != f"{APP_ID}|{APP_SECRET}":
                return graph_error(400, 190, message="Invalid app token")
            return httpx.Response(200, json={"data": {"is_valid": True, "app_id": APP_ID, "user_id": "77"}})
        token = q.get("access_token", "")
        if q.get("appsecret_proof") != proof(token):
            return graph_error(400, 100, message="Invalid appsecret_proof provided in the API argument")
        if token in self.revoked:
            return graph_error(400, 190, 460, message=f"The session for {token} has been invalidated")
        if path == "/v25.0/me":
            return httpx.Response(200, json={"id": "77", "name": "Ada Merchant"})
        if path == "/v25.0/me/accounts":
            return httpx.Response(200, json=self.cursor_pages[q.get("after")])
        return graph_error(404, 803, message="Unknown path")

    def graph(self) -> tuple[httpx.AsyncClient, facebook.Graph]:
        client = httpx.AsyncClient(transport=httpx.MockTransport(self))
        return client, facebook.Graph(
            client, graph_base=GRAPH, version=VERSION, app_id=APP_ID, app_secret=APP_SECRET
        )


def fixed(respond: Callable[[httpx.Request], httpx.Response]) -> tuple[httpx.AsyncClient, facebook.Graph]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(respond))
    return client, facebook.Graph(
        client, graph_base=GRAPH, version=VERSION, app_id=APP_ID, app_secret=APP_SECRET
    )


def raises(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def respond(request: httpx.Request) -> httpx.Response:
        raise exc

    return respond


@pytest.mark.asyncio
async def test_exchange_code() -> None:
    fake = FakeGraph()
    client, graph = fake.graph()
    async with client:
        token = await graph.exchange_code(code=CODE, redirect_uri=REDIRECT, now=NOW)
    assert token.access_token == SHORT
    assert token.expires_at == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    request = fake.requests[0]
    assert request.method == "GET"
    assert request.url.path == "/v25.0/oauth/access_token"
    assert fake.params(0) == {
        "client_id": APP_ID,
        "redirect_uri": REDIRECT,
        "client_secret": APP_SECRET,
        "code": CODE,
    }
    assert SHORT not in repr(token)


@pytest.mark.asyncio
async def test_exchange_code_redirect_mismatch_hides_graph_message() -> None:
    fake = FakeGraph()
    client, graph = fake.graph()
    async with client:
        with pytest.raises(errors.ProviderError) as caught:
            await graph.exchange_code(code=CODE, redirect_uri=REDIRECT + "/", now=NOW)
    assert type(caught.value) is errors.ProviderError
    assert "Facebook answered 400 to the code exchange (Graph error 100)" in str(caught.value)
    assert "verification" not in str(caught.value)
    assert_hidden(caught.value, CODE, APP_SECRET)


@pytest.mark.parametrize(
    ("respond", "message"),
    [
        (
            lambda r: httpx.Response(500, content=b"<html>down</html>"),
            "Facebook answered 500 to the code exchange",
        ),
        (lambda r: httpx.Response(200, content=b"not json"), "not valid JSON"),
        (lambda r: httpx.Response(200, content=b'{"access_token": "EAAtrunc'), "not valid JSON"),
        (lambda r: httpx.Response(200, json=["x"]), "not a JSON object"),
        (lambda r: httpx.Response(200, json={"token_type": "bearer"}), "had no access_token"),
        (
            lambda r: httpx.Response(200, json={"access_token": "EAAx", "expires_in": "soon"}),
            "unusable expires_in",
        ),
        (
            lambda r: httpx.Response(200, json={"access_token": "EAAx", "expires_in": 10**12}),
            "unusable expires_in",
        ),
        (
            lambda r: httpx.Response(200, json={"access_token": "EAAx", "expires_in": -1}),
            "unusable expires_in",
        ),
        (lambda r: httpx.Response(200, json={"error": {"code": 4, "message": CODE}}), "(Graph error 4)"),
        (
            lambda r: httpx.Response(400, json={"error": "weird"}),
            "Facebook answered 400 to the code exchange",
        ),
    ],
)
@pytest.mark.asyncio
async def test_exchange_code_failures(
    respond: Callable[[httpx.Request], httpx.Response], message: str
) -> None:
    client, graph = fixed(respond)
    async with client:
        with pytest.raises(errors.ProviderError) as caught:
            await graph.exchange_code(code=CODE, redirect_uri=REDIRECT, now=NOW)
    assert message in str(caught.value)
    assert_hidden(caught.value, CODE, APP_SECRET, "EAAtrunc")


@pytest.mark.asyncio
async def test_exchange_code_refuses_naive_now_before_sending() -> None:
    fake = FakeGraph()
    client, graph = fake.graph()
    async with client:
        with pytest.raises(ValueError, match="timezone-aware"):
            await graph.exchange_code(code=CODE, redirect_uri=REDIRECT, now=datetime(2026, 11, 1, 12, 0))
    assert fake.requests == []


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout(f"timeout code={CODE}"), httpx.ConnectError(f"refused {APP_SECRET}")]
)
@pytest.mark.asyncio
async def test_exchange_code_unavailable(exc: Exception) -> None:
    client, graph = fixed(raises(exc))
    async with client:
        with pytest.raises(errors.ProviderUnavailable) as caught:
            await graph.exchange_code(code=CODE, redirect_uri=REDIRECT, now=NOW)
    assert caught.value.__cause__ is None
    assert_hidden(caught.value, CODE, APP_SECRET)


@pytest.mark.parametrize(("expires", "expected"), [(5183944, NOW + timedelta(seconds=5183944)), (None, None)])
@pytest.mark.asyncio
async def test_long_lived(expires: int | None, expected: datetime | None) -> None:
    fake = FakeGraph()
    fake.long_lived_expires = expires
    client, graph = fake.graph()
    async with client:
        token = await graph.long_lived(SHORT, now=NOW)
    assert token.access_token == LONG
    assert token.expires_at == expected
    assert fake.params(0) == {
        "grant_type": "fb_exchange_token",
        "client_id": APP_ID,
        "client_secret": APP_SECRET,
        "fb_exchange_token": SHORT,
    }


@pytest.mark.asyncio
async def test_long_lived_failure_hides_tokens() -> None:
    client, graph = fixed(lambda r: graph_error(400, 190, 463, message=f"expired {SHORT}"))
    async with client:
        with pytest.raises(errors.TokenRevoked) as caught:
            await graph.long_lived(SHORT, now=NOW)
    assert_hidden(caught.value, SHORT, APP_SECRET)


@pytest.mark.asyncio
async def test_me_sends_proof() -> None:
    fake = FakeGraph()
    client, graph = fake.graph()
    async with client:
        assert await graph.me(LONG) == {"id": "77", "name": "Ada Merchant"}
    assert fake.requests[0].url.path == "/v25.0/me"
    assert fake.params(0) == {"fields": "id,name", "access_token": LONG, "appsecret_proof": proof(LONG)}


@pytest.mark.asyncio
async def test_me_without_id() -> None:
    client, graph = fixed(lambda r: httpx.Response(200, json={"name": "x"}))
    async with client:
        with pytest.raises(errors.ProviderError, match="no id"):
            await graph.me(LONG)


@pytest.mark.asyncio
async def test_pages_follows_cursors_with_our_own_requests() -> None:
    fake = FakeGraph()
    client, graph = fake.graph()
    async with client:
        pages = await graph.pages(LONG)
    assert [p.id for p in pages] == ["101", "103", "104"]  # page 2 had no token
    assert pages[0] == facebook.Page(
        id="101", name="Page 1", access_token="EAApage-1", category="Shop", tasks=["MESSAGING"]
    )
    assert "EAApage-1" not in repr(pages[0])
    assert len(fake.requests) == 3
    assert all(r.url.host == "graph.facebook.com" for r in fake.requests)
    assert all(r.url.path == "/v25.0/me/accounts" for r in fake.requests)
    for index, after in enumerate([None, "c1", "c2"]):
        params = fake.params(index)
        assert params["appsecret_proof"] == proof(LONG)
        assert params["access_token"] == LONG
        assert params["fields"] == "id,name,access_token,category,tasks"
        assert params["limit"] == "100"
        assert params.get("after") == after


@pytest.mark.asyncio
async def test_pages_stops_at_the_cap() -> None:
    seen: list[httpx.Request] = []

    def endless(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        n = len(seen)
        return httpx.Response(
            200,
            json={
                "data": [page(n)],
                "paging": {"cursors": {"after": f"c{n}"}, "next": f"{GRAPH}/x?after=c{n}"},
            },
        )

    client, graph = fixed(endless)
    async with client:
        pages = await graph.pages(LONG)
    assert len(seen) == 50
    assert len(pages) == 50


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"data": [page(1)], "paging": {"next": "https://graph.facebook.com/x"}}, "no after cursor"),
        ({"paging": {}}, "no data list"),
        ({"data": ["x"]}, "not a JSON object"),
        ({"data": [{"access_token": "EAAorphan", "name": "no id"}]}, "had no id"),
    ],
)
@pytest.mark.asyncio
async def test_pages_malformed(body: dict[str, Any], message: str) -> None:
    client, graph = fixed(lambda r: httpx.Response(200, json=body))
    async with client:
        with pytest.raises(errors.ProviderError, match=message) as caught:
            await graph.pages(LONG)
    assert_hidden(caught.value, LONG, "EAAorphan")


@pytest.mark.asyncio
async def test_revoked_token_is_token_revoked() -> None:
    fake = FakeGraph()
    fake.revoked.add(LONG)
    client, graph = fake.graph()
    async with client:
        with pytest.raises(errors.TokenRevoked) as caught:
            await graph.pages(LONG)
    assert "code 190, subcode 460" in str(caught.value)
    assert "session" not in str(caught.value)
    assert_hidden(caught.value, LONG, proof(LONG), APP_SECRET)


@pytest.mark.asyncio
async def test_graph_error_190_without_subcode() -> None:
    client, graph = fixed(lambda r: graph_error(401, 190))
    async with client:
        with pytest.raises(errors.TokenRevoked, match=r"\(code 190\)"):
            await graph.me(LONG)


@pytest.mark.asyncio
async def test_other_graph_error_is_not_revoked() -> None:
    client, graph = fixed(lambda r: graph_error(403, 10, message=f"permission for {LONG}"))
    async with client:
        with pytest.raises(errors.ProviderError) as caught:
            await graph.me(LONG)
    assert not isinstance(caught.value, errors.TokenRevoked)
    assert "Facebook answered 403" in str(caught.value)
    assert "(Graph error 10)" in str(caught.value)
    assert_hidden(caught.value, LONG, "permission")


@pytest.mark.asyncio
async def test_debug_token_uses_app_token() -> None:
    fake = FakeGraph()
    client, graph = fake.graph()
    async with client:
        data = await graph.debug_token(LONG)
    assert data == {"is_valid": True, "app_id": APP_ID, "user_id": "77"}
    assert fake.requests[0].url.path == "/debug_token"
    assert fake.params(0) == {"input_token": LONG, "access_token": f"{APP_ID}|{APP_SECRET}"}


@pytest.mark.asyncio
async def test_debug_token_without_data() -> None:
    client, graph = fixed(lambda r: httpx.Response(200, json={"is_valid": True}))
    async with client:
        with pytest.raises(errors.ProviderError, match="no data object"):
            await graph.debug_token(LONG)


def test_graph_repr_hides_secret() -> None:
    graph = facebook.Graph(
        httpx.AsyncClient(), graph_base=GRAPH, version=VERSION, app_id=APP_ID, app_secret=APP_SECRET
    )
    assert APP_SECRET not in repr(graph)


# --- signed requests ------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: Any, secret: str = SR_SECRET) -> str:
    # Built by hand so the parser is tested against an independent signer.
    part = b64url(json.dumps(payload).encode())
    return f"{b64url(hmac.new(secret.encode(), part.encode(), hashlib.sha256).digest())}.{part}"


def test_parse_signed_request_vector() -> None:
    assert facebook.parse_signed_request(SR_VECTOR, app_secret=SR_SECRET) == SR_EXPECTED


def test_parse_signed_request_tolerates_missing_signature_padding() -> None:
    unpadded = f"{SR_SIG.rstrip('=')}.{SR_PAYLOAD}"
    assert facebook.parse_signed_request(unpadded, app_secret=SR_SECRET) == SR_EXPECTED


def test_parse_signed_request_signs_payload_padding() -> None:
    # The signature covers the payload part exactly as sent, "==" included.
    with pytest.raises(errors.InvalidSignedRequest, match="does not match"):
        facebook.parse_signed_request(f"{SR_SIG}.{SR_PAYLOAD.rstrip('=')}", app_secret=SR_SECRET)


def flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


@pytest.mark.parametrize(
    ("signed_request", "message"),
    [
        (f"{flip(SR_SIG, 5)}.{SR_PAYLOAD}", "does not match"),
        (f"{SR_SIG}.{flip(SR_PAYLOAD, 20)}", "does not match"),
        (SR_VECTOR.replace("_", "/"), "32 bytes"),
        (f"{SR_SIG[:20]}.{SR_SIG[20:]}.{SR_PAYLOAD}", "32 bytes"),
        (f"{SR_SIG}.{SR_PAYLOAD}.", "does not match"),
        (f"{b64url(b'x' * 31)}.{SR_PAYLOAD}", "32 bytes"),
        ("garbage", "joined by '.'"),
        ("", "joined by '.'"),
        (".", "joined by '.'"),
        (f"{SR_SIG}.", "joined by '.'"),
        (f".{SR_PAYLOAD}", "joined by '.'"),
        ("!!!.???", "32 bytes"),
        ("é.é", "not ASCII"),
        ("A" * 8193, "longer than 8 KiB"),
        (f"{SR_SIG}.{SR_PAYLOAD}{'A' * 8200}", "longer than 8 KiB"),
    ],
)
def test_parse_signed_request_rejects(signed_request: str, message: str) -> None:
    with pytest.raises(errors.InvalidSignedRequest, match=message) as caught:
        facebook.parse_signed_request(signed_request, app_secret=SR_SECRET)
    assert SR_PAYLOAD[:20] not in str(caught.value)
    assert "foo_token" not in str(caught.value)


def test_parse_signed_request_wrong_secret() -> None:
    with pytest.raises(errors.InvalidSignedRequest, match="does not match"):
        facebook.parse_signed_request(SR_VECTOR, app_secret="other_secret")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"algorithm": "HMAC-SHA1", "user_id": "1"}, "algorithm"),
        ({"algorithm": "none", "user_id": "1"}, "algorithm"),
        ({"user_id": "1"}, "algorithm"),
        ({"algorithm": ["HMAC-SHA256"], "user_id": "1"}, "algorithm"),
        ({"algorithm": "HMAC-SHA256"}, "neither a user_id nor a profile_id"),
        ({"algorithm": "HMAC-SHA256", "user_id": None}, "neither a user_id nor a profile_id"),
        (["HMAC-SHA256"], "not a base64url JSON object"),
        ("just a string", "not a base64url JSON object"),
    ],
)
def test_parse_signed_request_bad_payload(payload: Any, message: str) -> None:
    with pytest.raises(errors.InvalidSignedRequest, match=message):
        facebook.parse_signed_request(signed(payload), app_secret=SR_SECRET)


def test_parse_signed_request_payload_not_json() -> None:
    part = b64url(b"{not json")
    sig = b64url(hmac.new(SR_SECRET.encode(), part.encode(), hashlib.sha256).digest())
    with pytest.raises(errors.InvalidSignedRequest, match="not a base64url JSON object"):
        facebook.parse_signed_request(f"{sig}.{part}", app_secret=SR_SECRET)


def test_parse_signed_request_deeply_nested_payload() -> None:
    part = b64url(b"[" * 6000)
    sig = b64url(hmac.new(SR_SECRET.encode(), part.encode(), hashlib.sha256).digest())
    with pytest.raises(errors.InvalidSignedRequest):
        facebook.parse_signed_request(f"{sig}.{part}", app_secret=SR_SECRET)


@pytest.mark.parametrize(
    "payload",
    [
        {"algorithm": "hmac-sha256", "user_id": "42"},
        {"algorithm": "HMAC-SHA256", "profile_id": "1089"},
    ],
)
def test_parse_signed_request_accepts(payload: dict[str, Any]) -> None:
    assert facebook.parse_signed_request(signed(payload), app_secret=SR_SECRET) == payload


def test_make_signed_request_format() -> None:
    payload = {"algorithm": "HMAC-SHA256", "user_id": "42", "issued_at": 1}
    made = facebook.make_signed_request(payload, app_secret=SR_SECRET)
    sig, part = made.split(".")
    assert "=" not in made
    assert json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) == payload
    assert sig == b64url(hmac.new(SR_SECRET.encode(), part.encode(), hashlib.sha256).digest())


@given(
    st.dictionaries(st.text(max_size=10), st.one_of(st.integers(), st.text(max_size=20)), max_size=5),
    st.text(min_size=1, max_size=20),
)
def test_make_then_parse_roundtrip(extra: dict[str, Any], secret: str) -> None:
    payload = {**extra, "algorithm": "HMAC-SHA256", "user_id": "42"}
    made = facebook.make_signed_request(payload, app_secret=secret)
    assert facebook.parse_signed_request(made, app_secret=secret) == payload


# --- signed request freshness and replay digest ---------------------------------------------------------

SR_NOW = 1_800_000_000.0


@pytest.mark.parametrize("issued_at", [SR_NOW, SR_NOW - 3600, SR_NOW + 300, int(SR_NOW) - 10])
def test_issued_at_inside_the_window_is_accepted(issued_at: float) -> None:
    facebook.check_issued_at({"issued_at": issued_at}, now=SR_NOW)


@pytest.mark.parametrize("issued_at", [SR_NOW - 3601, SR_NOW + 301, 321, 946_684_800])
def test_issued_at_outside_the_window_is_stale(issued_at: float) -> None:
    with pytest.raises(errors.StaleRequest):
        facebook.check_issued_at({"issued_at": issued_at}, now=SR_NOW)


@pytest.mark.parametrize("payload", [{}, {"issued_at": None}, {"issued_at": "1800000000"}, {"issued_at": True}])
def test_issued_at_missing_or_not_a_number_is_refused(payload: dict) -> None:
    with pytest.raises(errors.InvalidSignedRequest, match="issued_at"):
        facebook.check_issued_at(payload, now=SR_NOW)


def test_payload_digest_ignores_key_order_and_depends_on_key_and_content() -> None:
    payload = {"user_id": "1", "algorithm": "HMAC-SHA256", "issued_at": 5}
    digest = facebook.payload_digest(payload, key=b"k")
    assert facebook.payload_digest(dict(reversed(payload.items())), key=b"k") == digest
    assert facebook.payload_digest(payload, key=b"other") != digest
    assert facebook.payload_digest({**payload, "issued_at": 6}, key=b"k") != digest


def test_messenger_signatures_cover_the_raw_body() -> None:
    body = b'{"object":"page","entry":[]}'
    digest = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert facebook.messenger_signature_valid(body, f"sha256={digest}", APP_SECRET)
    assert facebook.messenger_signature_valid(body, f"sha256={digest.upper()}", APP_SECRET)  # hex is hex
    for header in (None, "", digest, f"sha1={digest}", f"sha256={digest[:-1]}", "sha256=ünïcode"):
        assert not facebook.messenger_signature_valid(body, header, APP_SECRET)
    assert not facebook.messenger_signature_valid(body + b" ", f"sha256={digest}", APP_SECRET)
    assert not facebook.messenger_signature_valid(body, f"sha256={digest}", "another-secret")
