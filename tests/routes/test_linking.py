"""Shopify and Facebook, in either order, end on one account UUID; a returning merchant finds it again."""

from __future__ import annotations

from service.settings import Settings
from tests.web import connect_facebook, connect_shopify, running_app, status_json


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
            await connect_facebook(fresh)  # Pages first in the new browser: a new account for now
            separate = (await status_json(fresh))["account"]
            assert separate != account
            await connect_shopify(fresh)  # the known store proves it is the same merchant: merged
            view = await status_json(fresh)
        assert view["account"] == account
        await both_connected(view)
        assert await web.store.list_tokens(account_uuid=separate) == []
        for page in ("101", "102", "103"):
            assert await web.store.get_token(f"PAGE_UUID_{page}") == account


async def test_two_merchants_stay_apart(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser, "first-shop")
        async with web.new_browser() as other:
            await connect_shopify(other, "second-shop")
            second = (await status_json(other))["account"]
        first = (await status_json(web.browser))["account"]
        assert first != second
        assert [s["shop"] for s in (await status_json(web.browser))["shops"]] == ["first-shop.myshopify.com"]
