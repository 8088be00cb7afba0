"""Headers on every response (service/headers.py): nosniff everywhere; HTML pages a Content-Security-Policy
that allows what they use (no script, the one stylesheet, forms to ourselves and where their redirects
go) and no framing; the stand-ins' consent pages and Messenger page cannot be framed either. The browser
test (tests/test_browser.py) proves both OAuth flows still complete under the policy in Chromium."""

from __future__ import annotations

import re

import httpx

from service.settings import Settings
from tests.web import SANDBOX, click, connect_facebook, connect_shopify, csrf_of, running_app, to_the_choice


def policy(response: httpx.Response) -> dict[str, list[str]]:
    header = response.headers["content-security-policy"]
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


async def test_every_response_says_nosniff_and_cannot_be_framed(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        b = web.browser
        await connect_shopify(b)
        json = {"accept": "application/json"}
        responses = [
            await b.get("/"),
            await b.get("/", headers=json),
            await b.get("/static/app.css"),
            await b.get("/healthz"),
            await b.get("/no/such/page"),
            await b.get("/no/such/page", headers=json),
            await b.put("/"),
            await b.post("/logout", data={"csrf_token": "forged"}),
            await b.get("/facebook/login", follow_redirects=False),
            await b.get("/facebook/callback?error=access_denied", follow_redirects=False),
            await b.post("/shopify/webhooks", content=b"{}"),
            await b.post("/facebook/deauthorize", data={"signed_request": "x"}),
        ]
    kinds = {response.headers.get("content-type", "").split(";")[0] for response in responses}
    assert {"text/html", "application/json", "text/css"} <= kinds
    for response in responses:
        where = f"{response.request.method} {response.url.path} {response.status_code}"
        assert response.headers["x-content-type-options"] == "nosniff", where
        rules = policy(response)
        assert rules["frame-ancestors"] == ["'none'"] and rules["default-src"] == ["'none'"], where


async def test_html_pages_allow_only_what_they_use(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        b = web.browser
        await connect_shopify(b)
        choice = await to_the_choice(b)
        await click(b, choice, "cancel-pages")
        signed = web.sandbox.facebook_signed_request({"user_id": "9001"})
        deletion = (await b.post("/facebook/data-deletion", data={"signed_request": signed})).json()["url"]
        pages = [
            await b.get("/"),
            choice,
            await b.get("/shopify/acme-7cu19ngr.myshopify.com/disconnect"),
            await b.get("/facebook/pages"),  # an error page: nothing waits for a choice any more
            await b.get(deletion),
        ]
    for page in pages:
        assert page.headers["content-type"].startswith("text/html"), page.url
        rules = policy(page)
        assert rules == {
            "default-src": ["'none'"],
            "style-src": ["'self'"],
            # Ourselves, the Shopify redirect URI's host (CanonicalHost), and the shops' Admin host.
            "form-action": ["'self'", "http://testserver", SANDBOX],
            "frame-ancestors": ["'none'"],
            "base-uri": ["'none'"],
        }, page.url
        # What the policy allows is all the page uses: no script, the one stylesheet, forms to ourselves.
        assert "<script" not in page.text and " style=" not in page.text and "<iframe" not in page.text
        assert re.findall(r'<link rel="stylesheet" href="([^"]*)"', page.text) == ["/static/app.css"]
        assert all(action.startswith("/") for action in re.findall(r'<form[^>]*action="([^"]*)"', page.text))


async def test_the_stand_ins_consent_and_messenger_pages_cannot_be_framed(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        b = web.browser
        pages = [
            await b.get("/shopify/acme-7cu19ngr/login"),
            await b.get("/facebook/login"),
            await b.get(f"{SANDBOX}/messenger"),
            await b.get(f"{SANDBOX}/shopify/not-a-shop/admin/oauth/authorize"),  # the stand-in's own error page
        ]
        assert (await csrf_of(b)) and (await connect_facebook(b)).status_code == 200
    for page in pages:
        assert str(page.url).startswith(SANDBOX) and page.headers["content-type"].startswith("text/html")
        assert policy(page)["frame-ancestors"] == ["'none'"], page.url
        assert page.headers["x-content-type-options"] == "nosniff"
