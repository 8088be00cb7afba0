"""A login reached on another host name than the redirect URIs' is sent to that host before a flow starts,
so the browser's cookie and the callback meet on one host (otherwise: invalid_state, and no hint why)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx
import pytest

from service.settings import Settings
from tests.routes.helpers import count_states
from tests.web import APP, SANDBOX, click, running_app

OTHER = "http://localhost"  # the same app, reached under a name the redirect URIs do not use


def browser_on_two_names(web) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(
        mounts={
            APP: httpx.ASGITransport(app=web.app),
            OTHER: httpx.ASGITransport(app=web.app),
            SANDBOX: httpx.ASGITransport(app=web.sandbox.app),
        },
        follow_redirects=True,
    )


@pytest.mark.parametrize(
    ("path", "query"),
    [("/shopify/acme-7cu19ngr/login", ""), ("/shopify/login", "shop=acme-7cu19ngr"), ("/facebook/login", "")],
)
async def test_login_on_another_host_redirects_to_the_configured_host_first(
    migrated: Settings, path: str, query: str
) -> None:
    async with running_app(migrated.database_url) as web, browser_on_two_names(web) as browser:
        response = await browser.get(f"{OTHER}{path}", params=query or None, follow_redirects=False)
        assert response.status_code == 307
        expected = f"{APP}{path}?{query + '&' if query else ''}host_checked=1"
        assert response.headers["location"] == expected
        assert "set-cookie" not in response.headers
        assert await count_states(web.store) == 0 and web.outbound.urls == []  # no flow started


async def test_a_click_through_begun_on_another_host_name_completes(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web, browser_on_two_names(web) as browser:
        consent = await browser.get(f"{OTHER}/shopify/acme-7cu19ngr/login")
        assert consent.status_code == 200 and str(consent.url).startswith(SANDBOX)
        done = await click(browser, consent, "allow")
        assert done.status_code == 200 and str(done.url).startswith(APP), done.text
        page = (await browser.get(f"{APP}/", headers={"accept": "application/json"})).json()
        assert [shop["shop"] for shop in page["shops"]] == ["acme-7cu19ngr.myshopify.com"]


async def test_the_redirect_happens_once_then_warns(migrated: Settings, caplog: pytest.LogCaptureFixture) -> None:
    # A proxy that does not pass the Host header: every request arrives under another name. No loop.
    async with running_app(migrated.database_url) as web, browser_on_two_names(web) as browser:
        with caplog.at_level(logging.WARNING, logger="salesbot"):
            response = await browser.get(f"{OTHER}/facebook/login?host_checked=1", follow_redirects=False)
        assert response.status_code == 302 and urlsplit(response.headers["location"]).netloc == "sandbox"
        assert any("must pass the Host header" in record.getMessage() for record in caplog.records)


async def test_the_configured_host_is_not_redirected(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        response = await web.browser.get(f"{APP}/facebook/login", follow_redirects=False)
        assert response.status_code == 302 and urlsplit(response.headers["location"]).netloc == "sandbox"
