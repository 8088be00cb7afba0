"""Browser sessions on the server (service/sessions.py): the cookie stays a few dozen bytes whatever the
messages and names; logging out ends the session, so a copy of the cookie opens and completes nothing; a
browser keeps one Facebook grant waiting at most, and none after logging out."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select, text

from service import sessions
from service.housekeeping import prune
from service.models import BrowserSession, utcnow
from service.settings import Settings
from service.vault import TokenStore
from tests.routes.helpers import error_code, snapshot
from tests.routes.test_linking import facebook_user
from tests.web import (
    Web,
    choose_pages,
    click,
    connect_shopify,
    csrf_of,
    form_of,
    running_app,
    status_json,
    to_the_choice,
)

COOKIE = "salesbot_session"
COOKIE_LIMIT = 4096  # bytes of one Set-Cookie browsers keep; past it the cookie is dropped
# 9 Pages, each named with 73 Japanese characters: a grant that made a 4,913-byte cookie.
LONG_NAMES = [(str(101 + n), ("アクメ靴店オンラインストア公式ページ" * 5)[:72] + str(n)) for n in range(9)]


def set_cookies(browser: httpx.AsyncClient) -> list[str]:
    """Start recording every Set-Cookie this browser receives, redirects included."""
    seen: list[str] = []

    async def record(response: httpx.Response) -> None:
        seen.extend(response.headers.get_list("set-cookie"))

    browser.event_hooks["response"].append(record)
    return seen


def with_cookie(web: Web, value: str) -> httpx.AsyncClient:
    """Another browser holding a copy of a cookie."""
    other = web.new_browser()
    other.cookies.set(COOKIE, value)
    return other


async def count(web: Web, table: str) -> int:
    async with web.store.engine.connect() as connection:
        return (await connection.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one()


async def test_every_set_cookie_stays_under_the_browsers_limit(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        seen = set_cookies(web.browser)
        # Three steps whose messages queue up unseen: none of them lands on the status page.
        consent = await web.browser.get("/shopify/acme-7cu19ngr/login")
        action, fields = form_of(consent, "allow")
        callback = await web.browser.post(action, data=fields, follow_redirects=False)
        assert (await web.browser.get(callback.headers["location"], follow_redirects=False)).status_code == 303
        cancel = await web.browser.get("/facebook/callback?error=access_denied", follow_redirects=False)
        assert cancel.status_code == 303
        with facebook_user(web, "9001", LONG_NAMES):
            form = await to_the_choice(web.browser)
            chosen = await choose_pages(web.browser, form, follow_redirects=False)  # all nine ticked
        assert chosen.status_code == 303
        assert seen and all(len(header.encode()) < COOKIE_LIMIT for header in seen), max(map(len, seen))
        assert all(len(header.split(";")[0]) < 100 for header in seen)  # an id, whatever the session holds
        # The messages waited on the server, names and all, and are shown once.
        page = await web.browser.get("/")
        assert page.text.count('class="flash') == 3
        assert "Connected 9 Pages: " + LONG_NAMES[0][1] in page.text and "and 4 more" in page.text
        view = await status_json(web.browser)
        assert view["account"] is not None and len(view["pages"]) == 9 and view["messages"] == []


async def test_a_copy_of_the_cookie_taken_before_logout_opens_nothing_after(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        account = (await status_json(web.browser))["account"]
        copy = web.browser.cookies[COOKIE]
        token = await csrf_of(web.browser)
        response = await web.browser.post("/logout", data={"csrf_token": token}, follow_redirects=False)
        assert response.status_code == 303
        async with with_cookie(web, copy) as thief:
            view = await status_json(thief)
            assert view["account"] is None and view["shops"] == []
            # Nor does the old CSRF token do anything: the session it belonged to is gone.
            refused = await thief.post("/shopify/acme-7cu19ngr.myshopify.com/disconnect", data={"csrf_token": token})
            assert refused.status_code == 403 and error_code(refused) == "csrf_failed"
        assert await web.store.account_of("USER_UUID_acme-7cu19ngr") == account  # the connection stays


async def test_logout_deletes_the_pending_grant_and_a_copy_of_the_cookie_completes_nothing(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        form = await to_the_choice(web.browser)
        assert await count(web, "facebook_grants") == 1
        copy = web.browser.cookies[COOKIE]
        await web.browser.post("/logout", data={"csrf_token": await csrf_of(web.browser)})
        assert await count(web, "facebook_grants") == 0  # it held the user token
        async with with_cookie(web, copy) as thief:
            again = await thief.get("/facebook/pages")
            assert again.status_code == 400 and error_code(again) == "invalid_state"
            done = await choose_pages(thief, form)  # the form's CSRF token, the old session's
            assert done.status_code == 403 and error_code(done) == "csrf_failed"
        assert await snapshot(web.store) == []


async def test_a_flow_started_before_logout_cannot_finish_after(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        consent = await web.browser.get("/shopify/acme-7cu19ngr/login")
        assert await count(web, "oauth_states") == 1
        await web.browser.post("/logout", data={"csrf_token": await csrf_of(web.browser)})
        assert await count(web, "oauth_states") == 0
        before = await snapshot(web.store)
        finished = await click(web.browser, consent, "allow")
        assert finished.status_code == 400 and error_code(finished) == "invalid_state"
        assert await snapshot(web.store) == before


async def test_one_pending_grant_per_browser(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        for _ in range(30):
            form = await to_the_choice(web.browser)
        assert await count(web, "facebook_grants") == 1
        done = await choose_pages(web.browser, form, ["102"])
        assert done.url.path == "/" and "Connected Acme Outlet" in done.text
        assert await count(web, "facebook_grants") == 0


async def test_a_session_moves_to_a_new_id_when_its_account_changes(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await web.browser.get("/facebook/login", follow_redirects=False)
        before = web.browser.cookies[COOKIE]
        await connect_shopify(web.browser)
        after = web.browser.cookies[COOKIE]
        assert after != before and (await status_json(web.browser))["account"] is not None
        assert await count(web, "browser_sessions") == 1  # the old id's row went with the move
        async with with_cookie(web, before) as planted:  # an id known before the sign-in
            assert (await status_json(planted))["account"] is None


async def test_a_save_after_the_session_ended_brings_nothing_back(store: TokenStore) -> None:
    now = utcnow()
    session_id = await sessions.create(store, {"browser": "nonce"}, now=now)
    assert (await sessions.load(store, session_id)).data == {"browser": "nonce"}  # type: ignore[union-attr]
    await sessions.end(store, session_id)  # a logout, while another request of the browser was running
    assert await sessions.save(store, session_id, {"browser": "nonce", "csrf": "t"}, renew=True, now=now) is False
    assert await sessions.rotate(store, session_id, {"browser": "nonce", "account": "a"}, now=now) is None
    assert await sessions.load(store, session_id) is None


async def test_expired_sessions_are_pruned_by_housekeeping(store: TokenStore) -> None:
    now = utcnow()
    old = await sessions.create(store, {"browser": "a"}, now=now - sessions.ANONYMOUS_LIFETIME - timedelta(seconds=1))
    live = await sessions.create(store, {"browser": "b"}, now=now)
    assert await sessions.load(store, old, now=now) is None  # expired: as good as gone already
    assert (await prune(store, now=now)).sessions == 1
    assert await sessions.load(store, live, now=now) is not None


async def test_an_anonymous_look_at_the_page_makes_no_session(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        seen = set_cookies(web.browser)
        for _ in range(3):  # a crawler, say
            page = await web.browser.get("/")
            assert page.status_code == 200 and "Nothing connected" in page.text
        assert seen == [] and await count(web, "browser_sessions") == 0


async def test_a_session_without_an_account_lives_an_hour_and_one_with_an_account_fourteen_days(
    migrated: Settings,
) -> None:
    async with running_app(migrated.database_url) as web:
        await web.browser.get("/facebook/login", follow_redirects=False)  # a sign-in under way: an anonymous session
        assert await expiry_in(web) <= sessions.ANONYMOUS_LIFETIME
        await connect_shopify(web.browser)
        assert sessions.ANONYMOUS_LIFETIME < await expiry_in(web) <= sessions.LIFETIME


async def expiry_in(web: Web) -> timedelta:
    async with web.store.engine.connect() as connection:
        [expires_at] = (await connection.execute(select(BrowserSession.expires_at))).scalars().all()
    return expires_at - utcnow()


async def test_the_stylesheet_never_reads_or_writes_the_session(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web, with_cookie(web, "no-such-session-id") as browser:
        css = await browser.get("/static/app.css")
        assert css.status_code == 200 and "set-cookie" not in css.headers
        page = await browser.get("/")  # a route of the app's: the unknown id is forgotten
        assert "salesbot_session=null" in page.headers["set-cookie"]
