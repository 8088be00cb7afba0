"""The connections page: names instead of ids, choosing Pages, disconnecting for real, messages shown once,
and what needs reconnecting, through the app and the stand-ins over ASGI (one cookie jar, as a browser)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from service.errors import TokenRevoked
from service.jobs.check import check_tokens
from service.models import utcnow
from service.settings import Settings
from service.vault import TokenStore
from tests.routes.helpers import error_code, snapshot
from tests.routes.test_linking import facebook_user
from tests.web import (
    Web,
    checkboxes,
    choose_pages,
    click,
    connect_facebook,
    connect_shopify,
    csrf_of,
    form_of,
    running_app,
    status_json,
    to_the_choice,
)

SHOP = "acme-7cu19ngr.myshopify.com"
PAGES = [("101", "Acme Shoes"), ("102", "Acme Outlet"), ("103", "Acme Café")]


def page_tokens_issued(web: Web, page_id: str) -> set[str]:
    """Every token the stand-in handed out for a Page (it hands them out with each Page list)."""
    return {value for value, token in web.sandbox.tokens.items() if token.kind == "PAGE" and token.page_id == page_id}


async def grants(web: Web) -> list[tuple]:
    async with web.store.engine.connect() as connection:
        return list((await connection.execute(text("SELECT * FROM facebook_grants"))).all())


# --- names ---------------------------------------------------------------------------------------


async def test_the_page_shows_names_the_providers_gave_and_the_json_view_the_same(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        web.sandbox.config.shop_names = {SHOP: "Acme Shoes Store"}
        web.sandbox.config.facebook_user_name = "Ana Example"
        await connect_shopify(web.browser)
        await connect_facebook(web.browser)
        view = await status_json(web.browser)
        page = await web.browser.get("/")
    assert [(shop["shop"], shop["name"]) for shop in view["shops"]] == [(SHOP, "Acme Shoes Store")]
    assert [(p["page_id"], p["name"], p["category"], p["granted_by_name"]) for p in view["pages"]] == [
        (page_id, name, "Retail", "Ana Example") for page_id, name in PAGES
    ]
    assert all("MESSAGING" in p["tasks"] for p in view["pages"])
    assert view["facebook_users"][0]["name"] == "Ana Example"
    assert "Acme Shoes (Page 101)" in page.text and "Acme Caf\u00e9 (Page 103)" in page.text
    assert "Ana Example" in page.text and "Acme Shoes Store" in page.text
    assert "Facebook user 9001" not in page.text
    assert "shpat_" not in page.text + str(view) and "EAA" not in page.text + str(view)


async def test_a_shop_name_shopify_does_not_give_does_not_stop_the_connect(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        web.sandbox.faults.add("shopify.shop", "status_500")
        done = await connect_shopify(web.browser)
        assert done.status_code == 200 and f"Connected {SHOP}" in done.text
        view = await status_json(web.browser)
    assert [(shop["shop"], shop["name"]) for shop in view["shops"]] == [(SHOP, None)]


# --- choosing Pages ------------------------------------------------------------------------------


async def test_only_the_ticked_pages_are_stored_and_the_others_tokens_never_written(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        form = await to_the_choice(web.browser)
        assert checkboxes(form) == {"101": (True, False), "102": (True, False), "103": (True, False)}
        assert await snapshot(web.store) == []  # nothing stored before the choice
        (waiting,) = await grants(web)
        every_page_token = set().union(*(page_tokens_issued(web, page_id) for page_id, _ in PAGES))
        assert every_page_token and not any(token in str(waiting) for token in every_page_token)
        user_tokens = {value for value, token in web.sandbox.tokens.items() if token.kind == "USER"}
        assert not any(token in str(waiting) for token in user_tokens)  # the user token waits encrypted

        done = await choose_pages(web.browser, form, ["101", "103"])
        assert done.status_code == 200 and done.url.path == "/"
        assert "Connected 2 Pages: Acme Shoes, Acme Caf\u00e9" in done.text
        view = await status_json(web.browser)
        assert [page["page_id"] for page in view["pages"]] == ["101", "103"]
        assert await web.store.get_record("FACEBOOK_ACCESS_TOKEN_102") is None
        assert await web.store.get_record("PAGE_UUID_102") is None
        stored = set((await web.store.get_all_tokens_by_type("token")).values())
        assert not stored & page_tokens_issued(web, "102")
        assert stored & page_tokens_issued(web, "101") and stored & page_tokens_issued(web, "103")
        assert await grants(web) == []  # the choice used the grant up


async def test_a_page_without_messaging_is_shown_but_cannot_be_chosen(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        web.sandbox.config.page_tasks = {"102": ["ANALYZE", "CREATE_CONTENT"]}
        form = await to_the_choice(web.browser)
        assert checkboxes(form) == {"101": (True, False), "102": (False, True), "103": (True, False)}
        assert "Acme Outlet" in form.text and "does not include messaging" in form.text
        assert 'aria-describedby="reason-102"' in form.text
        before = await snapshot(web.store)
        forced = await choose_pages(web.browser, form, ["101", "102"])  # a hand-made POST ticks it anyway
        assert forced.status_code == 400 and error_code(forced) == "invalid_choice"
        assert await snapshot(web.store) == before
        for wrong in (["999"], ["101", "101"]):
            response = await choose_pages(web.browser, form, wrong)
            assert response.status_code == 400 and error_code(response) == "invalid_choice", wrong
        assert await snapshot(web.store) == before
        done = await choose_pages(web.browser, form)  # the form as it comes: 101 and 103
        assert "Connected 2 Pages" in done.text
        assert [page["page_id"] for page in (await status_json(web.browser))["pages"]] == ["101", "103"]


async def test_one_page_it_can_message_for_is_connected_without_a_question(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        with facebook_user(web, "9001", [("101", "Acme Shoes")]):
            done = await connect_facebook(web.browser)
        assert done.url.path == "/" and "Connected Acme Shoes" in done.text
        assert await grants(web) == []


async def test_cancel_or_nothing_ticked_stores_nothing_and_the_grant_is_gone(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        for action, pages, message in (("cancel", None, "you cancelled"), ("connect", [], "none was ticked")):
            form = await to_the_choice(web.browser)
            done = await choose_pages(web.browser, form, pages, action=action)
            assert done.url.path == "/" and message in done.text
            assert await snapshot(web.store) == [] and await grants(web) == []
            again = await web.browser.get("/facebook/pages")
            assert again.status_code == 400 and error_code(again) == "invalid_state"


async def test_a_choice_works_once_and_only_in_the_browser_that_logged_in(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        form = await to_the_choice(web.browser)
        async with web.new_browser() as other:
            elsewhere = await other.get("/facebook/pages")
            assert elsewhere.status_code == 400 and error_code(elsewhere) == "invalid_state"
        await choose_pages(web.browser, form, ["101"])
        after = await snapshot(web.store)
        replay = await choose_pages(web.browser, form, ["102"])
        assert replay.status_code == 400 and error_code(replay) == "invalid_state"
        assert await snapshot(web.store) == after


async def test_pages_that_changed_at_facebook_meanwhile_store_nothing(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        form = await to_the_choice(web.browser)
        web.sandbox.config.page_tasks = {"103": ["ANALYZE"]}  # the merchant lost messaging on 103 meanwhile
        response = await choose_pages(web.browser, form)
        assert response.status_code == 409 and error_code(response) == "pages_changed"
        assert await snapshot(web.store) == []


async def test_a_script_chooses_through_json(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        web.browser.headers["accept"] = "application/json"
        consent = await web.browser.get("/facebook/login")
        form = await click(web.browser, consent, "allow")
        view = form.json()
        assert view["facebook_user"] == {"id": "9001", "name": "Demo Merchant"}
        assert [(p["page_id"], p["can_choose"], p["connected"]) for p in view["pages"]] == [
            ("101", True, False),
            ("102", True, False),
            ("103", True, False),
        ]
        await choose_pages(web.browser, form, ["102"])
        assert [page["page_id"] for page in (await status_json(web.browser))["pages"]] == ["102"]


async def test_removing_the_app_on_facebook_drops_a_login_waiting_for_its_choice(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await to_the_choice(web.browser)
        signed = web.sandbox.facebook_signed_request({"user_id": "9001"})
        assert (await web.browser.post("/facebook/deauthorize", data={"signed_request": signed})).status_code == 200
        assert await grants(web) == []


# --- messages --------------------------------------------------------------------------------------


async def test_each_step_leaves_a_message_shown_once(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        done = await connect_shopify(web.browser)
        assert f"Connected {SHOP}" in done.text and 'role="status"' in done.text
        assert f"Connected {SHOP}" not in (await web.browser.get("/")).text
        form = await to_the_choice(web.browser)
        _action, fields = form_of(form, "connect-pages")
        chosen = {"csrf_token": fields["csrf_token"], "action": "connect", "page": ["101", "102"]}
        response = await web.browser.post("/facebook/pages", data=chosen, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/"
        # A script reads the messages from the JSON view, once too.
        messages = (await status_json(web.browser))["messages"]
        assert messages == [{"kind": "ok", "code": None, "text": "Connected 2 Pages: Acme Shoes, Acme Outlet"}]
        assert (await status_json(web.browser))["messages"] == []


# --- disconnecting ---------------------------------------------------------------------------------


async def connected(web: Web) -> None:
    await connect_shopify(web.browser)
    await connect_facebook(web.browser)


async def confirm_and_disconnect(web: Web, path: str) -> httpx.Response:
    confirm = await web.browser.get(path)
    assert confirm.status_code == 200 and 'id="confirm"' in confirm.text, confirm.text
    return await click(web.browser, confirm, "confirm")


async def test_disconnecting_the_store_revokes_at_shopify_then_deletes_its_rows(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        web.sandbox.config.shop_names = {SHOP: "Acme Shoes Store"}
        await connected(web)
        token = await web.store.get_token("SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr")
        assert token in web.sandbox.valid_shopify_tokens(SHOP)
        before = await snapshot(web.store)
        confirm = await web.browser.get(f"/shopify/{SHOP}/disconnect")
        assert "Disconnect Acme Shoes Store?" in confirm.text
        assert await snapshot(web.store) == before and web.sandbox.revocations == []  # asking changes nothing
        done = await click(web.browser, confirm, "confirm")
        assert done.url.path == "/" and "Disconnected Acme Shoes Store: its access was removed at Shopify" in done.text
        assert [(r.provider, r.subject) for r in web.sandbox.revocations] == [("shopify", SHOP)]
        assert web.sandbox.valid_shopify_tokens(SHOP) == set()
        for key in ("SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr", "USER_UUID_acme-7cu19ngr"):
            assert await web.store.get_record(key) is None
        view = await status_json(web.browser)
        assert view["shops"] == [] and len(view["pages"]) == 3


async def test_disconnecting_pages_revokes_the_grant_with_the_last_one(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connected(web)
        done = await confirm_and_disconnect(web, "/facebook/pages/102/disconnect")
        assert "Disconnected Acme Outlet" in done.text
        assert web.sandbox.revocations == []  # other Pages of the grant stay: the grant stays
        assert await web.store.get_record("FACEBOOK_ACCESS_TOKEN_102") is None
        assert await web.store.get_record("PAGE_UUID_102") is None
        assert await web.store.get_record("FACEBOOK_USER_ACCESS_TOKEN_9001") is not None
        await confirm_and_disconnect(web, "/facebook/pages/101/disconnect")
        user_token = await web.store.get_token("FACEBOOK_USER_ACCESS_TOKEN_9001")
        last = await confirm_and_disconnect(web, "/facebook/pages/103/disconnect")
        assert "removed at Facebook" in last.text
        assert [(r.provider, r.subject) for r in web.sandbox.revocations] == [("facebook", "9001")]
        (revoke,) = [r for r in web.sandbox.requests if r.method == "DELETE"]
        assert revoke.path == "/graph/v25.0/9001/permissions" and dict(revoke.query)["access_token"] == user_token
        assert "appsecret_proof" in dict(revoke.query)
        assert await web.store.get_record("FACEBOOK_USER_ACCESS_TOKEN_9001") is None
        assert web.sandbox.valid_facebook_tokens() == set()
        view = await status_json(web.browser)
        assert view["pages"] == [] and view["facebook_users"] == [] and len(view["shops"]) == 1


async def test_a_provider_that_does_not_answer_leaves_the_local_deletion_done(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        with facebook_user(web, "9001", [("101", "Acme Shoes")]):
            await connect_facebook(web.browser)
        web.sandbox.faults.add("shopify.revoke", "drop")
        web.sandbox.faults.add("facebook.revoke", "status_500")
        store_done = await confirm_and_disconnect(web, f"/shopify/{SHOP}/disconnect")
        page_done = await confirm_and_disconnect(web, "/facebook/pages/101/disconnect")
        assert "Shopify did not answer" in store_done.text and 'class="flash warning"' in store_done.text
        assert "Facebook did not answer" in page_done.text
        assert web.sandbox.revocations == []
        # Every token and link is gone from our side (the account itself stays, empty).
        assert [row for row in await snapshot(web.store) if row[0] == "tokens"] == []
        view = await status_json(web.browser)
        assert view["shops"] == [] and view["pages"] == []


async def test_only_this_accounts_connections_can_be_disconnected(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connected(web)
        before = await snapshot(web.store)
        async with web.new_browser() as other:
            await connect_shopify(other, "others-shop")
            before = await snapshot(web.store)
            token = await csrf_of(other)
            for path in (f"/shopify/{SHOP}/disconnect", "/facebook/pages/101/disconnect"):
                assert (await other.get(path)).status_code == 404
                response = await other.post(path, data={"csrf_token": token}, headers={"accept": "text/html"})
                assert response.status_code == 404 and error_code(response) == "not_found"
        async with web.new_browser() as nobody:
            assert (await nobody.get("/facebook/pages/101/disconnect")).status_code == 404
        assert await snapshot(web.store) == before and web.sandbox.revocations == []


async def test_a_script_disconnects_with_json(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connected(web)
        response = await web.browser.post(
            f"/shopify/{SHOP}/disconnect",
            data={"csrf_token": await csrf_of(web.browser)},
            headers={"accept": "application/json"},
        )
        assert response.status_code == 200
        assert response.json()["status"] == "disconnected" and response.json()["revocation"] == "revoked"


# --- CSRF on every form ----------------------------------------------------------------------------


async def test_every_form_needs_this_sessions_csrf_token(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connected(web)
        await to_the_choice(web.browser)  # a login waiting for its choice, for the Pages form
        async with web.new_browser() as other:
            await other.get("/")
            foreign = await csrf_of(other)  # a real token, of another session
        before, grants_before, account = await snapshot(web.store), await grants(web), await status_json(web.browser)
        forms = {
            "/logout": {},
            "/facebook/pages": {"action": "connect", "page": ["101"]},
            f"/shopify/{SHOP}/disconnect": {},
            "/facebook/pages/101/disconnect": {},
        }
        for path, fields in forms.items():
            for token in (None, "", "not-the-token", foreign):
                data = fields if token is None else {**fields, "csrf_token": token}
                response = await web.browser.post(path, data=data, headers={"accept": "text/html"})
                assert response.status_code == 403 and error_code(response) == "csrf_failed", (path, token)
                assert "reload the page" in response.text.lower()
        assert await snapshot(web.store) == before and await grants(web) == grants_before
        assert web.sandbox.revocations == []
        assert (await status_json(web.browser))["account"] == account["account"]  # not logged out


# --- what needs attention --------------------------------------------------------------------------


async def online_check(web: Web) -> None:
    async with httpx.AsyncClient(transport=web.outbound, timeout=5.0) as client:
        await check_tokens(web.store, online=True, settings=web.settings, client=client)


async def test_tokens_found_dead_need_reconnecting_until_connected_again(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        web.sandbox.config.shopify_expiring = False  # a token nothing can refresh
        await connected(web)
        assert (await status_json(web.browser))["needs"] == []
        web.sandbox.revoke_shopify(SHOP)
        web.sandbox.revoke_facebook_user()  # a password change: every Page token dies
        await online_check(web)
        view = await status_json(web.browser)
        assert view["needs"] == [
            f"reconnect_shopify:{SHOP}",
            "reconnect_facebook:101",
            "reconnect_facebook:102",
            "reconnect_facebook:103",
        ]
        assert all(shop["needs_reconnecting"] for shop in view["shops"])
        page = await web.browser.get("/")
        assert page.text.count('<span class="badge">needs reconnecting</span>') == 4
        assert "4 connections need reconnecting" in page.text
        assert (
            f'href="/shopify/{SHOP}/login"' in page.text and 'aria-label="Reconnect Acme Shoes (Page 101)"' in page.text
        )
        await connect_shopify(web.browser)
        await connect_facebook(web.browser)
        assert (await status_json(web.browser))["needs"] == []


async def test_a_page_the_bots_client_found_dead_needs_reconnecting(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connected(web)
        web.sandbox.revoke_facebook_user()  # every Page token dies at Facebook; nothing here knows yet
        assert (await status_json(web.browser))["needs"] == []
        # A bot process answers on Page 102 only: Graph says 190, its client marks that token dead.
        async with TokenStore.open(web.settings, transport=web.outbound) as bot, bot.graph_client("102") as client:
            with pytest.raises(TokenRevoked):
                await client.post("me/messages", json={"recipient": {"id": "7001"}, "message": {"text": "Hi"}})
        view = await status_json(web.browser)
        assert view["needs"] == ["reconnect_facebook:102"]  # only what was found dead, not what is guessed
        page = await web.browser.get("/")
        assert 'aria-label="Reconnect Acme Outlet (Page 102)"' in page.text


async def test_a_shopify_refresh_token_near_its_end_needs_reconnecting(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        key = "SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr"
        await web.store.set_metadata(key, refresh_expires_at=utcnow() + timedelta(days=30))
        assert (await status_json(web.browser))["needs"] == []
        await web.store.set_metadata(key, refresh_expires_at=utcnow() + timedelta(days=3))
        view = await status_json(web.browser)
        assert view["needs"] == [f"reconnect_shopify:{SHOP}"]
        shop = view["shops"][0]
        assert (shop["health"], shop["reason"]) == ("expiring_soon", "refresh_token_ending")
        assert "refresh token ends on" in shop["reason_text"] and "refresh token ends on" in view["headline"]
