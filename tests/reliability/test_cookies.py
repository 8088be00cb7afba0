"""The session cookie: a random id naming a session kept on the server (service/sessions.py), HttpOnly,
SameSite=Lax, Secure on request or over https (then named `__Host-`), expiring; not movable between
browsers; cleared by POST /logout. Pages that show an account or an error are neither cached nor framed."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import itsdangerous
import pytest
from sqlalchemy import text

from service.models import utcnow
from service.sessions import ANONYMOUS_LIFETIME, LIFETIME
from service.settings import Settings
from tests.routes.helpers import error_code, snapshot
from tests.web import SANDBOX, click, connect_facebook, connect_shopify, csrf_of, running_app, status_json


def set_cookie(response) -> str:
    return next(v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith("salesbot_session="))


@pytest.mark.parametrize("secure", [False, True])
async def test_cookie_flags(migrated: Settings, secure: bool) -> None:
    extra = {"SESSION_COOKIE_SECURE": "true"} if secure else {}
    async with running_app(migrated.database_url, **extra) as web:
        response = await web.browser.get("/facebook/login", follow_redirects=False)
        attributes = [part.strip().lower() for part in set_cookie(response).split(";")]
        assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
        # A session without an account (a sign-in under way) lives an hour; one with an account 14 days.
        assert f"max-age={int(ANONYMOUS_LIFETIME.total_seconds())}" in attributes
        assert ("secure" in attributes) is secure
        if not secure:  # httpx keeps a Secure cookie off plain http: the connect below needs it
            seen: list[str] = []

            async def record(response: httpx.Response) -> None:
                seen.extend(response.headers.get_list("set-cookie"))

            web.browser.event_hooks["response"].append(record)
            await connect_shopify(web.browser)
            assert any(f"max-age={int(LIFETIME.total_seconds())}" in cookie.lower() for cookie in seen)
            assert timedelta(days=14) >= LIFETIME


def state_of(response) -> str:
    return parse_qs(urlsplit(response.headers["location"]).query)["state"][0]


async def test_a_state_does_not_work_in_another_browser_or_with_a_tampered_cookie(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        login = await web.browser.get("/facebook/login", follow_redirects=False)
        consent = await web.browser.get(login.headers["location"])
        assert str(consent.url).startswith(SANDBOX)
        # Let the sandbox redirect, but do not follow it: take the callback URL (code + state) to other browsers.
        web.browser.follow_redirects = False
        redirect = await click(web.browser, consent, "allow")
        web.browser.follow_redirects = True
        callback = redirect.headers["location"]
        before = await snapshot(web.store)

        thief = web.new_browser()  # no cookie at all
        response = await thief.get(callback)
        assert response.status_code == 400 and error_code(response) == "invalid_state"

        thief_with_own_session = web.new_browser()  # a session of its own, with a flow of its own
        await thief_with_own_session.get("/facebook/login", follow_redirects=False)
        response = await thief_with_own_session.get(callback)
        assert response.status_code == 400 and error_code(response) == "invalid_state"

        original = web.browser.cookies["salesbot_session"]
        flipped = original[:-1] + ("A" if original[-1] != "A" else "B")
        # What the cookie was before sessions moved to the server: signed contents naming the browser.
        old_style = base64.b64encode(json.dumps({"browser": "x" * 32}).encode()).decode()
        for tampered in (
            flipped,  # one character changed: another id, which names no session
            original[:-2],  # cut short
            secrets.token_urlsafe(32),  # well formed, but never issued
            original + "'; --",  # not an id at all
            itsdangerous.TimestampSigner("not-our-secret").sign(old_style).decode(),
        ):
            forger = web.new_browser()
            response = await forger.get(callback, headers={"cookie": f"salesbot_session={tampered}"})
            assert response.status_code == 400 and error_code(response) == "invalid_state", tampered
        assert await snapshot(web.store) == before
        # The browser that started it still can: none of the above spent the state.
        done = await web.browser.get(callback)  # the grant's three Pages: the app asks which to connect
        assert done.status_code == 200 and done.url.path == "/facebook/pages"


async def test_an_expired_session_is_ignored_by_the_server(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        login = await web.browser.get("/shopify/acme-7cu19ngr/login", follow_redirects=False)
        assert login.status_code == 302
        cookie = web.browser.cookies["salesbot_session"]
        # The browser kept the cookie past its Max-Age (a clock set back, say); the row's expiry is in the past.
        async with web.store.engine.begin() as connection:
            await connection.execute(
                text("UPDATE browser_sessions SET expires_at = :past"),
                {"past": (utcnow() - timedelta(seconds=60)).replace(tzinfo=None)},
            )
        from tests.routes.helpers import callback_params, shopify_callback

        url = shopify_callback(callback_params(state_of(login)))
        stale = web.new_browser()
        response = await stale.get(url, headers={"cookie": f"salesbot_session={cookie}"})
        assert response.status_code == 400 and error_code(response) == "invalid_state"
        assert "another browser" not in response.text  # it found no session at all


HTTPS = {
    "SHOPIFY_REDIRECT_URI": "https://shop.example/shopify/callback",
    "FACEBOOK_REDIRECT_URI": "https://shop.example/facebook/callback",
}


async def public_login(web):  # type: ignore[no-untyped-def]
    # As a TLS proxy forwards it: the public host name, so the login is not sent there first (CanonicalHost).
    return await web.browser.get("/facebook/login", headers={"host": "shop.example"}, follow_redirects=False)


def cookie_attributes(response) -> tuple[str, list[str]]:
    header = next(v for k, v in response.headers.multi_items() if k == "set-cookie")
    name = header.split("=", 1)[0]
    return name, [part.strip().lower() for part in header.split(";")[1:]]


async def test_over_https_the_cookie_is_secure_and_host_prefixed_without_any_setting(migrated: Settings) -> None:
    async with running_app(migrated.database_url, **HTTPS) as web:
        name, attributes = cookie_attributes(await public_login(web))
    assert name == "__Host-salesbot_session"
    # What browsers demand of a __Host- cookie: Secure, Path=/ and no Domain.
    assert "secure" in attributes and "path=/" in attributes
    assert not any(attribute.startswith("domain") for attribute in attributes)


async def test_session_cookie_secure_false_still_overrides_https(migrated: Settings) -> None:
    async with running_app(migrated.database_url, SESSION_COOKIE_SECURE="false", **HTTPS) as web:
        name, attributes = cookie_attributes(await public_login(web))
    assert name == "salesbot_session" and "secure" not in attributes


async def test_logout_clears_the_session(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        page = await web.browser.get("/")
        assert 'action="/logout"' in page.text
        response = await web.browser.post(
            "/logout", data={"csrf_token": await csrf_of(web.browser)}, follow_redirects=False
        )
        assert response.status_code == 303 and response.headers["location"] == "/"
        name, attributes = cookie_attributes(response)
        assert name == "salesbot_session" and any(a.startswith("expires=thu, 01 jan 1970") for a in attributes)
        assert "salesbot_session" not in web.browser.cookies
        assert (await status_json(web.browser))["account"] is None
        assert await web.store.get_token("SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr") is not None  # only the session


async def test_status_error_and_deletion_pages_are_not_cached_or_framed(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_facebook(web.browser)
        signed = web.sandbox.facebook_signed_request({"user_id": "9001"})
        deletion = await web.browser.post("/facebook/data-deletion", data={"signed_request": signed})
        pages = [
            await web.browser.get("/"),
            await web.browser.get("/", headers={"accept": "application/json"}),
            await web.browser.get("/facebook/callback?error=access_denied"),  # an error page
            await web.browser.get("/no/such/page"),
            await web.browser.post("/facebook/deauthorize", data={"signed_request": "x"}),  # an error, as JSON
            await web.browser.get(deletion.json()["url"]),
            await web.browser.get(deletion.json()["url"], headers={"accept": "application/json"}),
        ]
    for response in pages:
        assert response.headers["cache-control"] == "no-store", response.url
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], response.url
