"""Facebook Login, cancel, Graph failures, and the deauthorize and data-deletion callbacks: their
signed_request checked, fresh (issued_at) and handled once."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from service.settings import Settings
from tests.routes.helpers import error_code, snapshot
from tests.web import FACEBOOK_APP_ID, SANDBOX, connect_facebook, connect_shopify, running_app, status_json


async def test_login_stores_user_and_page_tokens_with_proof_on_every_graph_call(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        done = await connect_facebook(web.browser)
        assert done.status_code == 200
        user = await web.store.get_record("FACEBOOK_USER_ACCESS_TOKEN_9001")
        assert user is not None and user.expires_at is not None
        assert user.value in web.sandbox.valid_facebook_tokens()
        pages = [await web.store.get_record(f"FACEBOOK_ACCESS_TOKEN_{page}") for page in ("101", "102", "103")]
        assert all(page is not None and page.granted_by == "9001" and page.expires_at is None for page in pages)
        graph_calls = [r for r in web.sandbox.requests if r.path.startswith("/graph/") and "/oauth/" not in r.path]
        assert graph_calls and all(any(k == "appsecret_proof" for k, _ in r.query) for r in graph_calls)
        # Paging was followed (the sandbox serves two Pages per response), once for the form that asks which
        # Pages to connect and once for the tokens of the Pages chosen.
        assert sum(r.path.endswith("/me/accounts") for r in web.sandbox.requests) == 4


async def test_dialog_carries_the_configured_scopes_and_version(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        response = await web.browser.get("/facebook/login", follow_redirects=False)
        location = response.headers["location"]
        assert location.startswith(f"{SANDBOX}/facebook/v25.0/dialog/oauth?")
        assert f"client_id={FACEBOOK_APP_ID}" in location
        assert "scope=pages_show_list%2Cpages_messaging%2Cpages_manage_metadata" in location


async def test_cancel_ends_on_the_status_page_with_a_message_and_stores_nothing(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        before = await snapshot(web.store)
        response = await connect_facebook(web.browser, button="cancel")
        assert response.status_code == 200 and response.url.path == "/" and error_code(response) == "access_denied"
        assert "You cancelled on Facebook" in response.text
        assert "You cancelled" not in (await web.browser.get("/")).text  # shown once
        assert await snapshot(web.store) == before
        # A script gets the error itself.
        web.browser.headers["accept"] = "application/json"
        response = await connect_facebook(web.browser, button="cancel")
        assert response.status_code == 400 and response.json()["error"] == "access_denied"
        assert await snapshot(web.store) == before


@pytest.mark.parametrize(
    ("endpoint", "fault", "code"),
    [
        ("facebook.accounts", "graph_190", "token_revoked"),
        ("facebook.access_token", "status_500", "provider_error"),
        ("facebook.me", "malformed_json", "provider_error"),
        ("facebook.accounts", "missing_fields", "provider_error"),
    ],
)
async def test_graph_failures_store_nothing(migrated: Settings, endpoint: str, fault: str, code: str) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        before = await snapshot(web.store)
        web.sandbox.faults.add(endpoint, fault)
        response = await connect_facebook(web.browser)
        assert response.status_code in (502, 504) and error_code(response) == code
        assert "Traceback" not in response.text
        assert await snapshot(web.store) == before


async def deauthorize(web, payload: dict, path: str = "/facebook/deauthorize"):
    return await web.browser.post(path, data={"signed_request": web.sandbox.facebook_signed_request(payload)})


async def test_deauthorize_deletes_the_users_tokens_and_keeps_links(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        await connect_facebook(web.browser)
        response = await deauthorize(web, {"user_id": "9001"})
        assert response.status_code == 200 and response.json()["deleted"] == 4
        assert await web.store.get_token("FACEBOOK_USER_ACCESS_TOKEN_9001") is None
        assert await web.store.get_token("FACEBOOK_ACCESS_TOKEN_101") is None
        assert await web.store.get_token("PAGE_UUID_101") is not None  # reconnecting finds the same account
        assert await web.store.get_token("SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr") is not None
        again = await deauthorize(web, {"user_id": "9001"})
        assert again.status_code == 200 and again.json()["deleted"] == 0


async def test_page_removal_deletes_only_that_page(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_facebook(web.browser)
        response = await deauthorize(web, {"profile_id": "102"})
        assert response.status_code == 200 and response.json()["deleted"] == 1
        assert await web.store.get_token("FACEBOOK_ACCESS_TOKEN_102") is None
        assert await web.store.get_token("FACEBOOK_ACCESS_TOKEN_101") is not None


@pytest.mark.parametrize(
    "signed_request",
    ["", "no-dot", "abc.def", "U0_O1MqqNKUt32633zAkdd2Ce-jGVgRgJeRauyx_zC8=.eyJhbGdvcml0aG0iOiJITUFDLVNIQTI1NiJ9"],
)
async def test_bad_signed_requests_change_nothing(migrated: Settings, signed_request: str) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_facebook(web.browser)
        before = await snapshot(web.store)
        for path in ("/facebook/deauthorize", "/facebook/data-deletion"):
            response = await web.browser.post(path, data={"signed_request": signed_request})
            assert response.status_code == 400 and response.json()["error"] == "invalid_signed_request"
        assert await snapshot(web.store) == before


async def test_data_deletion_erases_and_answers_a_working_status_url(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_facebook(web.browser)
        response = await deauthorize(web, {"user_id": "9001"}, path="/facebook/data-deletion")
        assert response.status_code == 200
        body = response.json()
        assert body["url"] == f"http://testserver/facebook/data-deletion/{body['confirmation_code']}"
        assert await web.store.get_token("PAGE_UUID_101") is None
        assert await web.store.get_token("FACEBOOK_ACCESS_TOKEN_103") is None
        status = await web.browser.get(body["url"])
        assert status.status_code == 200 and body["confirmation_code"] in status.text and "completed" in status.text
        as_json = await web.browser.get(body["url"], headers={"accept": "application/json"})
        assert as_json.json()["deleted_rows"] == 7
        missing = await web.browser.get("/facebook/data-deletion/unknown-code")
        assert missing.status_code == 404 and error_code(missing) == "not_found"
        assert (await status_json(web.browser))["pages"] == []


# --- signed_request freshness and replays -------------------------------------------------------------------


async def deletion_rows(web) -> int:
    async with web.store.engine.connect() as connection:
        return (await connection.execute(text("SELECT COUNT(*) FROM deletion_requests"))).scalar_one()


@pytest.mark.parametrize("issued_at", [946_684_800, "an hour ago", "ten minutes ahead"])
async def test_a_signed_request_outside_its_window_deletes_nothing(migrated: Settings, issued_at) -> None:
    when = {"an hour ago": time.time() - 3660, "ten minutes ahead": time.time() + 600}.get(issued_at, issued_at)
    async with running_app(migrated.database_url) as web:
        await connect_facebook(web.browser)
        before = await snapshot(web.store)
        for path in ("/facebook/deauthorize", "/facebook/data-deletion"):
            response = await deauthorize(web, {"user_id": "9001", "issued_at": int(when)}, path=path)
            assert response.status_code == 400 and response.json()["error"] == "stale_timestamp", response.text
        response = await deauthorize(web, {"profile_id": "101", "issued_at": int(when)})
        assert response.status_code == 400 and response.json()["error"] == "stale_timestamp"
        assert await snapshot(web.store) == before and await deletion_rows(web) == 0


async def test_a_signed_request_without_issued_at_is_refused(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_facebook(web.browser)
        before = await snapshot(web.store)
        response = await deauthorize(web, {"user_id": "9001", "issued_at": None})
        assert response.status_code == 400 and response.json()["error"] == "invalid_signed_request"
        assert await snapshot(web.store) == before


async def test_a_signed_request_a_little_old_or_early_is_accepted(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_facebook(web.browser)
        early = await deauthorize(web, {"profile_id": "101", "issued_at": int(time.time()) + 240})
        assert early.status_code == 200 and early.json()["deleted"] == 1
        late = await deauthorize(web, {"profile_id": "102", "issued_at": int(time.time()) - 3000})
        assert late.status_code == 200 and late.json()["deleted"] == 1


async def test_a_replayed_signed_request_deletes_nothing_more_and_adds_no_deletion_row(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_facebook(web.browser)
        deletion = web.sandbox.facebook_signed_request({"user_id": "9001"})
        first = await web.browser.post("/facebook/data-deletion", data={"signed_request": deletion})
        assert first.status_code == 200 and await deletion_rows(web) == 1
        deauthorizing = web.sandbox.facebook_signed_request({"user_id": "9001", "issued_at": int(time.time()) - 1})
        assert (await web.browser.post("/facebook/deauthorize", data={"signed_request": deauthorizing})).json() == {
            "status": "ok",
            "deleted": 0,
        }
        await connect_facebook(web.browser)  # the merchant connects again: a replay must not undo that
        before = await snapshot(web.store)
        again = await web.browser.post("/facebook/data-deletion", data={"signed_request": deletion})
        assert again.status_code == 200 and again.json() == first.json()  # the same code and status URL
        replayed = await web.browser.post("/facebook/deauthorize", data={"signed_request": deauthorizing})
        assert replayed.status_code == 200 and replayed.json() == {"status": "duplicate", "deleted": 0}
        assert await snapshot(web.store) == before and await deletion_rows(web) == 1
        status = await web.browser.get(first.json()["url"], headers={"accept": "application/json"})
        assert status.json()["deleted_rows"] == 7
