"""Shopify and Facebook, in either order, end on one account UUID; a returning merchant finds it again;
and nobody else gets in: an account is entered only through the identity that created each of its links."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from service.settings import Settings
from service.vault import TokenStore, TokenWrite
from tests.routes.helpers import refused_on_status_page
from tests.web import Web, connect_facebook, connect_shopify, running_app, status_json


async def both_connected(view: dict) -> None:
    assert view["missing"] == []
    assert [shop["shop"] for shop in view["shops"]] == ["acme-7cu19ngr.myshopify.com"]
    assert sorted(page["page_id"] for page in view["pages"]) == ["101", "102", "103"]


async def test_shopify_first_then_facebook(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        account = (await status_json(web.browser))["account"]
        await connect_facebook(web.browser)
        view = await status_json(web.browser)
        assert view["account"] == account
        await both_connected(view)
        owned = {record.key for record in await web.store.account_tokens(account)}
        assert owned == {
            "SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr",
            "USER_UUID_acme-7cu19ngr",
            "FACEBOOK_USER_ACCESS_TOKEN_9001",
            *(f"FACEBOOK_ACCESS_TOKEN_{page}" for page in ("101", "102", "103")),
            *(f"PAGE_UUID_{page}" for page in ("101", "102", "103")),
        }


async def test_facebook_first_then_shopify(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_facebook(web.browser)
        account = (await status_json(web.browser))["account"]
        assert account is not None
        await connect_shopify(web.browser)
        view = await status_json(web.browser)
        assert view["account"] == account
        await both_connected(view)
        for page in ("101", "102", "103"):
            assert await web.store.get_token(f"PAGE_UUID_{page}") == account


async def test_returning_merchant_in_a_new_browser_finds_the_same_account(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        account = (await status_json(web.browser))["account"]
        async with web.new_browser() as fresh:
            assert (await status_json(fresh))["account"] is None
            await connect_shopify(fresh)  # the store's own OAuth proves it is the same merchant
            assert (await status_json(fresh))["account"] == account
            await connect_facebook(fresh)
            view = await status_json(fresh)
        assert view["account"] == account
        await both_connected(view)
        for page in ("101", "102", "103"):
            assert await web.store.get_token(f"PAGE_UUID_{page}") == account


async def test_returning_facebook_user_in_a_new_browser_finds_the_same_account(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        await connect_facebook(web.browser)
        account = (await status_json(web.browser))["account"]
        async with web.new_browser() as fresh:
            done = await connect_facebook(fresh)  # the same Facebook user that granted its Pages
            assert done.status_code == 200
            view = await status_json(fresh)
        assert view["account"] == account
        await both_connected(view)


async def test_two_merchants_stay_apart(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser, "first-shop")
        async with web.new_browser() as other:
            await connect_shopify(other, "second-shop")
            second = (await status_json(other))["account"]
        first = (await status_json(web.browser))["account"]
        assert first != second
        assert [s["shop"] for s in (await status_json(web.browser))["shops"]] == ["first-shop.myshopify.com"]


# --- nobody else gets in ----------------------------------------------------------------------------


@contextmanager
def facebook_user(web: Web, user_id: str, pages: list[tuple[str, str]]) -> Iterator[None]:
    """Make the stand-in's Facebook user someone else, who manages these Pages, for the flows inside."""
    config = web.sandbox.config
    saved = config.facebook_user_id, config.pages
    config.facebook_user_id, config.pages = user_id, pages
    try:
        yield
    finally:
        config.facebook_user_id, config.pages = saved


async def everything_of(store: TokenStore, *accounts: str) -> list:
    """Every row of these accounts, values decrypted, times and all: equal means untouched."""
    return [await store.account_tokens(account) for account in accounts]


async def merchant(web: Web, browser: httpx.AsyncClient, shop: str, user: str, pages: list[tuple[str, str]]) -> str:
    await connect_shopify(browser, shop)
    with facebook_user(web, user, pages):
        assert (await connect_facebook(browser)).status_code == 200
    view = await status_json(browser)
    assert sorted(page["page_id"] for page in view["pages"]) == sorted(page for page, _ in pages)
    return view["account"]


async def test_a_moderator_of_one_page_gets_nothing_of_the_merchants_account(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        await connect_facebook(web.browser)  # the merchant: user 9001, Pages 101-103
        account = (await status_json(web.browser))["account"]
        before = await everything_of(web.store, account)
        async with web.new_browser() as moderator:
            with facebook_user(web, "7002", [("102", "Acme Outlet")]):
                response = await connect_facebook(moderator)
            assert refused_on_status_page(response) == "page_owned_elsewhere"
            assert "Acme Outlet (102)" in response.text
            view = await status_json(moderator)
            assert view["account"] != account and view["shops"] == [] and view["pages"] == []
            await connect_shopify(moderator, "moderators-own-shop")  # their own store joins their own account
            assert (await status_json(moderator))["account"] == view["account"]
            # The moderator removing the app deletes what their own grant gave: not the merchant's Page.
            signed = web.sandbox.facebook_signed_request({"user_id": "7002"})
            assert (await moderator.post("/facebook/deauthorize", data={"signed_request": signed})).status_code == 200
        assert await everything_of(web.store, account) == before
        assert (await web.store.get_record("FACEBOOK_ACCESS_TOKEN_102")).granted_by == "9001"


async def test_an_agency_user_merges_nothing_and_connects_only_its_own_pages(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        first = await merchant(web, web.browser, "first-shop", "9001", [("101", "First"), ("102", "First Too")])
        second_browser = web.new_browser()
        second = await merchant(web, second_browser, "second-shop", "9002", [("201", "Second")])
        before = await everything_of(web.store, first, second)
        async with web.new_browser() as agency:
            agency.headers["accept"] = "application/json"
            with facebook_user(web, "9100", [("101", "First"), ("201", "Second"), ("301", "Agency's own")]):
                response = await connect_facebook(agency)
            assert response.status_code == 409
            assert response.json()["error"] == "page_owned_elsewhere" and response.json()["pages"] == ["101", "201"]
            assert "other Pages of your grant were connected" in response.json()["message"]
            view = await status_json(agency)
        # The grant's own Page is stored, in an account of the agency's own; the merchants' are untouched.
        assert view["account"] not in (first, second)
        assert [page["page_id"] for page in view["pages"]] == ["301"]
        assert await everything_of(web.store, first, second) == before
        second_view = await status_json(second_browser)
        assert second_view["account"] == second and [p["page_id"] for p in second_view["pages"]] == ["201"]
        await second_browser.aclose()


async def test_pages_first_in_a_new_browser_then_the_known_store_is_refused_not_merged(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        account = (await status_json(web.browser))["account"]
        async with web.new_browser() as fresh:
            await connect_facebook(fresh)  # the Facebook user is new here: an account of its own
            separate = (await status_json(fresh))["account"]
            assert separate != account
            before = await everything_of(web.store, account, separate)
            response = await connect_shopify(fresh)
            assert refused_on_status_page(response) == "shop_owned_elsewhere"
            assert (await status_json(fresh))["account"] == separate
        after = await everything_of(web.store, account, separate)
        assert after == before


async def test_a_planted_session_cookie_does_not_join_another_merchants_store(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        victim = await merchant(web, web.browser, "victim-shop", "9001", [("101", "Victim")])
        async with web.new_browser() as attacker, web.new_browser() as planted, web.new_browser() as later:
            attacking = await merchant(web, attacker, "attacker-shop", "6666", [("601", "Attacker")])
            before = await everything_of(web.store, victim, attacking)
            # The attacker's session cookie, planted in a browser where the victim connects their store.
            planted.cookies.set("salesbot_session", attacker.cookies["salesbot_session"])
            response = await connect_shopify(planted, "victim-shop")
            assert refused_on_status_page(response) == "shop_owned_elsewhere"
            assert "victim-shop.myshopify.com" in response.text
            assert (await status_json(planted))["account"] == attacking
            after = await everything_of(web.store, victim, attacking)
            assert after == before
            # Later, the attacker's own Facebook user opens the attacker's account, and only that.
            with facebook_user(web, "6666", [("601", "Attacker")]):
                await connect_facebook(later)
            view = await status_json(later)
            assert view["account"] == attacking and [s["shop"] for s in view["shops"]] == [
                "attacker-shop.myshopify.com"
            ]


async def test_a_facebook_user_linked_elsewhere_does_not_join_the_browsers_account(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_facebook(web.browser)
        pages_account = (await status_json(web.browser))["account"]
        async with web.new_browser() as other:
            await connect_shopify(other, "other-shop")
            shop_account = (await status_json(other))["account"]
            before = await everything_of(web.store, pages_account, shop_account)
            response = await connect_facebook(other)  # the same Facebook user, from a browser in another account
            assert refused_on_status_page(response) == "facebook_user_owned_elsewhere"
            assert (await status_json(other))["account"] == shop_account
        assert await everything_of(web.store, pages_account, shop_account) == before


async def test_a_page_linked_without_a_known_owner_is_taken_only_inside_its_own_account(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        account = (await status_json(web.browser))["account"]
        await web.store.store_tokens([TokenWrite("PAGE_UUID_101", account, "uuid")])  # as `import-env` links it
        async with web.new_browser() as stranger:
            with facebook_user(web, "7002", [("101", "Acme Shoes")]):
                response = await connect_facebook(stranger)
            assert refused_on_status_page(response) == "page_owned_elsewhere"
        assert await web.store.get_record("FACEBOOK_ACCESS_TOKEN_101") is None
        assert (await connect_facebook(web.browser)).status_code == 200  # from inside the account: taken
        record = await web.store.get_record("PAGE_UUID_101")
        assert record.account_uuid == account and record.granted_by == "9001"
