"""Identifiers from the providers are checked like input: a Page id or a Facebook user id that is not digits, or
a granted Shopify scope outside Shopify's grammar, refuses the answer whole (invalid_provider_id, naming the
value), stores nothing of it; and a link built from an id is one URL-encoded path segment."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urljoin

from service.settings import Settings
from tests.routes.helpers import error_code, snapshot
from tests.routes.test_linking import facebook_user
from tests.web import click, connect_facebook, connect_shopify, form_of, running_app, status_json

SHOP = "acme-7cu19ngr.myshopify.com"
CLIMBING = f"x/../../../shopify/{SHOP}"  # a Page id that, as a link, resolves to the store's disconnect page


async def test_a_page_id_that_is_not_a_number_refuses_the_grant_and_stores_nothing(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        before = await snapshot(web.store)
        with facebook_user(web, "9001", [("101", "Acme Shoes"), (CLIMBING, "Trojan")]):
            response = await connect_facebook(web.browser)
        assert response.status_code == 502 and error_code(response) == "invalid_provider_id"
        assert "x/../../../shopify/acme" in response.text and "Trojan" in response.text  # which Page, quoted
        assert await snapshot(web.store) == before  # not the other Page, not the user token
        view = await status_json(web.browser)
        assert view["pages"] == [] and [shop["shop"] for shop in view["shops"]] == [SHOP]


async def test_a_facebook_user_id_that_is_not_a_number_stores_nothing(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        before = await snapshot(web.store)
        with facebook_user(web, "9001/../1", [("101", "Acme Shoes")]):
            response = await connect_facebook(web.browser)
        assert response.status_code == 502 and error_code(response) == "invalid_provider_id"
        assert "9001/../1" in response.text
        assert await snapshot(web.store) == before


async def test_a_granted_scope_outside_shopifys_grammar_stores_nothing(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        before = await snapshot(web.store)
        consent = await web.browser.get(f"/shopify/{SHOP}/login")
        action, fields = form_of(consent, "allow")
        # The merchant can edit what the consent page asks for; the stand-in, like Shopify, grants it.
        fields["scope"] = "read_products,read_orders,read_\x1b[2Jx"
        response = await web.browser.post(action, data=fields)
        assert response.status_code == 502 and error_code(response) == "invalid_provider_id"
        assert "\x1b" not in response.text and "read_\\x1b[2Jx" in response.text
        assert await snapshot(web.store) == before


async def test_links_built_from_ids_are_single_url_encoded_segments(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        account = (await status_json(web.browser))["account"]
        # A Page row from before ids were checked (imported, say): its id must not steer its own links.
        await web.store.store_token(f"PAGE_UUID_{CLIMBING}", account, type="uuid")
        await web.store.store_token(f"FACEBOOK_ACCESS_TOKEN_{CLIMBING}", "EAAP-old", provider="facebook")
        page = await web.browser.get("/")
        [href] = re.findall(r'href="(/facebook/pages/[^"]*/disconnect)"', page.text)
        assert href == "/facebook/pages/x%2F..%2F..%2F..%2Fshopify%2Facme-7cu19ngr.myshopify.com/disconnect"
        # Followed as a browser resolves it, it reaches no other route (not the store's disconnect page).
        followed = await web.browser.get(urljoin(str(page.url), unescape(href)))
        assert followed.status_code == 404 and "Disconnect" not in followed.text
        # The store's own links are segments too, and still work.
        confirm = await web.browser.get(f"/shopify/{SHOP}/disconnect")
        action, _fields = form_of(confirm, "confirm")
        assert action.endswith(f"/shopify/{SHOP}/disconnect")
        assert (await click(web.browser, confirm, "confirm")).status_code == 200
