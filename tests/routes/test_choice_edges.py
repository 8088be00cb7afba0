"""The edges of choosing and disconnecting Pages: a script's choice is answered in JSON, a Facebook login of
another account is refused before the choice is shown, and disconnecting a Page never removes the grant of
a Facebook login that belongs to another account."""

from __future__ import annotations

from sqlalchemy import text

from service.settings import Settings
from tests.routes.helpers import error_code, snapshot
from tests.routes.test_linking import facebook_user
from tests.web import (
    Web,
    choose_pages,
    click,
    connect_facebook,
    connect_shopify,
    csrf_of,
    running_app,
    status_json,
)

JSON = {"accept": "application/json"}


async def grants(web: Web) -> int:
    async with web.store.engine.connect() as connection:
        return (await connection.execute(text("SELECT COUNT(*) FROM facebook_grants"))).scalar_one()


async def test_a_scripts_choice_of_pages_is_answered_in_json(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        web.browser.headers["accept"] = "application/json"
        form = await click(web.browser, await web.browser.get("/facebook/login"), "allow")
        done = await choose_pages(web.browser, form, ["101", "103"], follow_redirects=False)
        assert done.status_code == 200 and done.headers["content-type"].startswith("application/json")
        body = done.json()
        assert body["status"] == "connected" and body["account"] == (await status_json(web.browser))["account"]
        assert body["pages"] == [{"page_id": "101", "name": "Acme Shoes"}, {"page_id": "103", "name": "Acme Café"}]
        assert body["message"] == "Connected 2 Pages: Acme Shoes, Acme Café"
        # A refusal is its 409 and code, with the Pages it names.
        async with web.new_browser() as other:
            other.headers["accept"] = "application/json"
            with facebook_user(web, "7002", [("101", "Acme Shoes"), ("104", "Acme Kids")]):
                form = await click(other, await other.get("/facebook/login"), "allow")
                refused = await choose_pages(other, form, follow_redirects=False)
        assert refused.status_code == 409 and refused.json()["error"] == "page_owned_elsewhere"
        assert refused.json()["pages"] == ["101"]


async def test_a_facebook_login_of_another_account_is_refused_before_the_choice(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_facebook(web.browser)  # user 9001 and its three Pages: one account
        async with web.new_browser() as other:
            await connect_shopify(other, "others-shop")  # another account
            before = await snapshot(web.store)
            response = await click(other, await other.get("/facebook/login"), "allow")  # 9001 again, three Pages
            assert response.url.path == "/" and error_code(response) == "facebook_user_owned_elsewhere"
            assert 'id="choose-pages"' not in response.text
            assert await grants(web) == 0  # nothing was held for a choice that could not be made
            assert (await other.get("/facebook/pages")).status_code == 400
        assert await snapshot(web.store) == before


async def test_disconnecting_a_page_never_removes_another_accounts_facebook_login(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        mine = (await status_json(web.browser))["account"]
        async with web.new_browser() as other:
            await connect_facebook(other)  # the other account: Facebook user 9001, its token, Pages 101-103
            theirs = (await status_json(other))["account"]
        # A Page of this account recorded as granted by that user (the linking rule keeps this from happening
        # through the flows; the disconnect must not rely on it).
        await web.store.store_token("PAGE_UUID_555", mine, type="uuid", granted_by="9001")
        await web.store.store_token("FACEBOOK_ACCESS_TOKEN_555", "EAAP-555", provider="facebook", granted_by="9001")
        before = await web.store.account_tokens(theirs)
        done = await web.browser.post("/facebook/pages/555/disconnect", data={"csrf_token": await csrf_of(web.browser)})
        assert done.status_code == 200 and "belongs to another account" in done.text
        assert await web.store.get_record("FACEBOOK_ACCESS_TOKEN_555") is None
        assert await web.store.account_tokens(theirs) == before  # their user token kept
        assert web.sandbox.revocations == []  # and their grant at Facebook untouched
        assert not [r for r in web.sandbox.requests if r.method == "DELETE"]
        assert 'class="flash warning"' in done.text  # the merchant is told the grant was left alone
