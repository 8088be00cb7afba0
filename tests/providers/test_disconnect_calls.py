"""The provider calls of the connections page: the shop's name, and giving up access at Shopify
(`DELETE /admin/api_permissions/current.json`) and at Facebook (`DELETE /{user-id}/permissions`),
against fakes that record what they were sent (docs/providers.md)."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl

import httpx
import pytest

from service import errors
from service.providers import facebook, shopify
from tests.providers.helpers import Fake, Respond, answer, assert_hidden

ADMIN = "https://acme.myshopify.com"
TOKEN = "shpat_live_token"
GRAPH, VERSION, APP_ID, APP_SECRET = "https://graph.facebook.com", "v25.0", "1234567890", "fb_app_secret_value"
USER_TOKEN = "EAAlong-user-token"

def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused")


# --- the shop's name -----------------------------------------------------------------------------


async def name_from(fake: Fake) -> str | None:
    async with fake.client() as client:
        return await shopify.shop_name(client, admin_base=ADMIN, access_token=TOKEN, api_version="2026-10")


async def test_shop_name_reads_shop_json_with_the_token() -> None:
    fake = Fake(answer(200, {"shop": {"id": 1, "name": "  Acme Shoes ", "myshopify_domain": "acme.myshopify.com"}}))
    assert await name_from(fake) == "Acme Shoes"
    request = fake.requests[0]
    assert (request.method, str(request.url)) == ("GET", f"{ADMIN}/admin/api/2026-10/shop.json")
    assert request.headers["X-Shopify-Access-Token"] == TOKEN


@pytest.mark.parametrize(
    "respond",
    [
        answer(401, {"errors": "[API] Invalid API key or access token"}),
        answer(500, {"errors": "Internal Server Error"}),
        answer(200, {"shop": {"id": 1}}),
        answer(200, {"shop": {"name": ""}}),
        answer(200, {"shop": {"name": 42}}),
        answer(200, ["not", "an", "object"]),
        lambda request: httpx.Response(200, content=b'{"shop": '),
        refused,
    ],
)
async def test_a_shop_name_shopify_does_not_give_is_none_not_an_error(respond: Respond) -> None:
    assert await name_from(Fake(respond)) is None


async def test_a_long_shop_name_is_cut() -> None:
    assert await name_from(Fake(answer(200, {"shop": {"name": "x" * 1000}}))) == "x" * shopify.MAX_NAME_LENGTH


# --- giving up access at Shopify -----------------------------------------------------------------


async def revoke(fake: Fake) -> bool:
    async with fake.client() as client:
        return await shopify.revoke_access(client, admin_base=ADMIN, access_token=TOKEN)


async def test_revoke_access_deletes_the_current_permission_with_the_token() -> None:
    fake = Fake(answer(200, {}))
    assert await revoke(fake) is True
    request = fake.requests[0]
    assert (request.method, str(request.url)) == ("DELETE", f"{ADMIN}/admin/api_permissions/current.json")
    assert request.headers["X-Shopify-Access-Token"] == TOKEN


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_token_shopify_no_longer_accepts_has_nothing_left_to_revoke(status: int) -> None:
    assert await revoke(Fake(answer(status, {"errors": "[API] Invalid API key or access token"}))) is False


async def test_revoke_access_other_answers_and_no_answer() -> None:
    with pytest.raises(errors.ProviderError, match="Shopify answered 503 to the access removal"):
        await revoke(Fake(answer(503, {})))
    with pytest.raises(errors.ProviderUnavailable) as caught:
        await revoke(Fake(refused))
    assert_hidden(caught.value, TOKEN)


# --- giving up access at Facebook ----------------------------------------------------------------


def proof(token: str) -> str:
    return hmac.new(APP_SECRET.encode(), token.encode(), hashlib.sha256).hexdigest()


async def revoke_permissions(fake: Fake, user_id: str = "9001") -> None:
    async with fake.client() as client:
        graph = facebook.Graph(client, graph_base=GRAPH, version=VERSION, app_id=APP_ID, app_secret=APP_SECRET)
        await graph.revoke_permissions(user_id, USER_TOKEN)


async def test_revoke_permissions_sends_delete_with_token_and_proof() -> None:
    fake = Fake(answer(200, {"success": True}))
    await revoke_permissions(fake)
    request = fake.requests[0]
    assert request.method == "DELETE" and request.url.path == f"/{VERSION}/9001/permissions"
    assert dict(parse_qsl(request.url.query.decode())) == {
        "access_token": USER_TOKEN,
        "appsecret_proof": proof(USER_TOKEN),
    }


async def test_revoke_permissions_failures() -> None:
    revoked = {"error": {"message": "session invalidated", "type": "OAuthException", "code": 190, "error_subcode": 460}}
    with pytest.raises(errors.TokenRevoked):
        await revoke_permissions(Fake(answer(400, revoked)))
    with pytest.raises(errors.ProviderError, match="did not confirm"):
        await revoke_permissions(Fake(answer(200, {"success": False})))
    with pytest.raises(errors.ProviderUnavailable) as caught:
        await revoke_permissions(Fake(refused))
    assert_hidden(caught.value, USER_TOKEN)


async def test_revoke_permissions_refuses_a_user_id_that_is_not_digits_before_sending() -> None:
    fake = Fake(answer(200, {"success": True}))
    with pytest.raises(ValueError, match="digits"):
        await revoke_permissions(fake, "9001/../me")
    assert fake.requests == []
