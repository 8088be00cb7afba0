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
