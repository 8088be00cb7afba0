"""The connections page says first where the bot stands, in words; ids, scopes and expiry times wait
under "Details"; a Shopify install left unfinished is said once. (The states that need the merchant are
reached in tests/bot/test_health.py.)"""

from __future__ import annotations

import re

from service.settings import Settings
from tests.web import connect_facebook, connect_shopify, running_app, status_json

SHOP = "acme-7cu19ngr.myshopify.com"


def first_line(html: str) -> str:
    found = re.search(r'<p id="headline"[^>]*>(.*?)</p>', html, flags=re.S)
    assert found is not None
    return found.group(1).strip()


async def test_the_first_line_follows_what_is_connected(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        page = await web.browser.get("/")
        assert first_line(page.text) == "Connect a Shopify store and a Facebook Page so the bot can answer shoppers."
        await connect_shopify(web.browser)
        assert (await status_json(web.browser))["headline"] == "Connect a Facebook Page so the bot can answer shoppers."
        await connect_facebook(web.browser, pages=["101", "103"])
        page = await web.browser.get("/")
        assert first_line(page.text) == "Your bot answers on Acme Shoes and Acme Café with products from Acme 7Cu19Ngr."
        # It is the first thing in the page's body after the title, before messages and lists.
        assert page.text.index("<h1>") < page.text.index('id="headline"') < page.text.index('id="shops"')
        # Another merchant, Facebook first, in another browser: the store is what is missing.
        web.sandbox.config.facebook_user_id, web.sandbox.config.facebook_user_name = "9002", "Other Merchant"
        other = web.new_browser()
        await connect_facebook(other, pages=["102"])
        view = await status_json(other)
        assert view["headline"] == "Connect a Shopify store so the bot has products to sell on Acme Outlet."
        await other.aclose()


async def test_ids_scopes_and_expiry_times_are_under_details(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        await connect_facebook(web.browser, pages=["101"])
        page = (await web.browser.get("/")).text
        account = (await status_json(web.browser))["account"]
        disclosures = re.findall(r"<details\b[^>]*>(.*?)</details>", page, flags=re.S)
        assert len(disclosures) == 3  # the account, the store, the Page
        assert all("<summary>Details</summary>" in block for block in disclosures)
        hidden = "".join(disclosures)
        outside = re.sub(r"<details\b.*?</details>", "", page, flags=re.S)
        for detail in (account, "read_products,read_orders", "Token expires", "Refresh token expires", "Scopes"):
            assert detail in hidden and detail not in outside, detail
        assert "<script" not in page  # a native disclosure: no JavaScript


async def test_an_install_left_at_shopify_is_said_once(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        consent = await web.browser.get(f"/shopify/{SHOP}/login")
        assert consent.status_code == 200  # the merchant is on Shopify's page, and goes back without installing
        view = await status_json(web.browser)
        assert [(m["code"], m["text"]) for m in view["messages"]] == [
            (
                "install_not_finished",
                f"You did not finish installing the app on {SHOP}, so nothing changed there. "
                "Connect the store again when you are ready.",
            )
        ]
        assert (await status_json(web.browser))["messages"] == []  # once
        done = await connect_shopify(web.browser)  # an install that finishes says only that it did
        assert f"Connected {SHOP} (Acme 7Cu19Ngr)" in done.text and "did not finish" not in done.text
