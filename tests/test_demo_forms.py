"""`salesbot demo` under uvicorn: its webhook buttons are forms like the others (this session's CSRF token or
403, nothing sent), its stylesheet is served by the app, and its stand-ins say what they gave up."""

from __future__ import annotations

import httpx

from tests.demo_server import salesbot_server
from tests.web import form_of

SHOP = "acme-demo.myshopify.com"


def connect_store(browser: httpx.Client) -> None:
    consent = browser.get("/shopify/acme-demo/login")
    action, fields = form_of(consent, "allow")
    assert browser.post(action, data=fields).status_code == 200


def view(browser: httpx.Client) -> dict:
    return browser.get("/", headers={"accept": "application/json"}).json()


def test_demo_buttons_need_the_sessions_csrf_token() -> None:
    with salesbot_server("demo") as base_url, httpx.Client(base_url=base_url, follow_redirects=True, timeout=10) as b:
        connect_store(b)
        before = view(b)
        assert [shop["shop"] for shop in before["shops"]] == [SHOP]
        with httpx.Client(base_url=base_url, timeout=10) as other:
            foreign = view(other)["csrf_token"]
        for path, fields in (("/demo/uninstall", {"shop": SHOP}), ("/demo/deauthorize", {})):
            for token in (None, "forged", foreign):
                data = fields if token is None else {**fields, "csrf_token": token}
                response = b.post(path, data=data, headers={"accept": "text/html"})
                assert response.status_code == 403 and 'data-code="csrf_failed"' in response.text, (path, token)
        assert [shop["shop"] for shop in view(b)["shops"]] == [SHOP]  # no uninstall was sent
        done = b.post("/demo/uninstall", data={"shop": SHOP, "csrf_token": view(b)["csrf_token"]})
        assert done.status_code == 200 and view(b)["shops"] == []
        css = b.get("/static/app.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert b.get("/sandbox/revocations").json() == []  # an uninstall webhook revokes nothing at the stand-in


def connect_pages(browser: httpx.Client) -> None:
    consent = browser.get("/facebook/login")
    action, fields = form_of(consent, "allow")
    choice = browser.post(action, data=fields)
    _action, fields = form_of(choice, "connect-pages")
    done = browser.post("/facebook/pages", data={**fields, "action": "connect", "page": ["101", "102", "103"]})
    assert done.status_code == 200 and len(view(browser)["pages"]) == 3


def test_demo_buttons_act_only_on_this_browsers_own_connections() -> None:
    with (
        salesbot_server("demo") as base_url,
        httpx.Client(base_url=base_url, follow_redirects=True, timeout=10) as owner,
        httpx.Client(base_url=base_url, follow_redirects=True, timeout=10) as stranger,
    ):
        connect_store(owner)
        connect_pages(owner)
        before = view(owner)
        token = view(stranger)["csrf_token"]  # a fresh browser: a session and a CSRF token of its own, no account
        for path, fields in (
            ("/demo/uninstall", {"shop": SHOP}),
            ("/demo/deauthorize", {}),
            ("/demo/message", {"page_id": "101", "text": "Hi, who are you?"}),
            ("/demo/page-event", {"page_id": "101", "event": "password_changed"}),
        ):
            response = stranger.post(path, data={**fields, "csrf_token": token}, headers={"accept": "text/html"})
            assert response.status_code == 404 and 'data-code="not_found"' in response.text, path
        after = view(owner)
        assert (after["shops"], after["pages"], after["needs"]) == (before["shops"], before["pages"], [])
        assert "Shopper" not in stranger.get("/sandbox/messenger").text  # the bot was never written to
        # The owner's own buttons work.
        mine = view(owner)["csrf_token"]
        sent = owner.post("/demo/message", data={"page_id": "101", "text": "Hi!", "csrf_token": mine})
        assert sent.url.path == "/sandbox/messenger" and "Shopper 7001" in sent.text
        assert owner.post("/demo/deauthorize", data={"csrf_token": mine}).status_code == 200
        assert view(owner)["pages"] == []


def test_every_demo_response_says_nosniff_and_its_pages_cannot_be_framed() -> None:
    with salesbot_server("demo") as base_url, httpx.Client(base_url=base_url, follow_redirects=True, timeout=10) as b:
        connect_store(b)
        responses = {
            path: b.get(path)
            for path in ("/", "/static/app.css", "/sandbox/messenger", "/sandbox/revocations", "/bot/webhook")
        }
        responses["consent"] = b.get("/facebook/login")
    for where, response in responses.items():
        assert response.headers["x-content-type-options"] == "nosniff", where
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], where


def test_the_demo_makes_facebook_kill_a_pages_token_and_checks_it_at_once() -> None:
    with salesbot_server("demo") as base_url, httpx.Client(base_url=base_url, follow_redirects=True, timeout=10) as b:
        connect_store(b)
        consent = b.get("/facebook/login")
        action, fields = form_of(consent, "allow")
        choice = b.post(action, data=fields)
        _action, fields = form_of(choice, "connect-pages")
        b.post(
            "/facebook/pages", data={"csrf_token": fields["csrf_token"], "action": "connect", "page": ["101", "102"]}
        )
        assert view(b)["headline"] == "Your bot answers on Acme Shoes and Acme Outlet with products from Acme Demo."
        event = {"page_id": "102", "event": "password_changed"}
        refused = b.post("/demo/page-event", data=event, headers={"accept": "text/html"})
        assert refused.status_code == 403 and view(b)["needs"] == []  # no CSRF token: nothing done
        b.post("/demo/page-event", data={**event, "csrf_token": view(b)["csrf_token"]})
        after = view(b)
        assert after["needs"] == ["reconnect_facebook:102"]
        assert after["headline"] == (
            "Acme Outlet needs reconnecting: its Facebook password was changed. "
            "Your bot answers on Acme Shoes with products from Acme Demo."
        )
