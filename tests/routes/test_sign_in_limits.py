"""Unfinished sign-ins are capped: 20 per browser, 500 per client address; beyond that 429 with Retry-After."""

from __future__ import annotations

import httpx

from service.oauth_state import MAX_STATES_PER_BROWSER, MAX_STATES_PER_CLIENT, STATE_LIFETIME
from service.settings import Settings
from tests.routes.helpers import count_states, error_code
from tests.web import APP, click, running_app


def assert_too_many(response: httpx.Response) -> None:
    assert response.status_code == 429 and error_code(response) == "too_many_sign_ins", response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= STATE_LIFETIME.total_seconds()


async def test_a_browser_with_20_unfinished_sign_ins_gets_429_until_one_is_finished(migrated: Settings) -> None:
    assert MAX_STATES_PER_BROWSER == 20
    async with running_app(migrated.database_url) as web:
        shopify = await web.browser.get("/shopify/acme-7cu19ngr/login", follow_redirects=False)
        assert shopify.status_code == 302
        for _ in range(19):
            assert (await web.browser.get("/facebook/login", follow_redirects=False)).status_code == 302
        assert await count_states(web.store) == 20
        for path in ("/facebook/login", "/shopify/acme-7cu19ngr/login"):
            assert_too_many(await web.browser.get(path, follow_redirects=False))
            assert_too_many(await web.browser.get(path, headers={"accept": "application/json"}))
        assert await count_states(web.store) == 20
        async with web.new_browser() as other:  # another browser is not held up
            assert (await other.get("/facebook/login", follow_redirects=False)).status_code == 302
        # Finishing a flow spends its state, which frees a place.
        finished = await click(web.browser, await web.browser.get(shopify.headers["location"]), "allow")
        assert finished.status_code == 200 and str(finished.url) == f"{APP}/"
        assert (await web.browser.get("/facebook/login", follow_redirects=False)).status_code == 302


async def test_one_address_with_500_unfinished_sign_ins_gets_429(migrated: Settings) -> None:
    assert MAX_STATES_PER_CLIENT == 500
    async with running_app(migrated.database_url) as web:
        for n in range(MAX_STATES_PER_CLIENT):
            web.browser.cookies.clear()  # a new browser session each time, from the same address
            response = await web.browser.get("/facebook/login", follow_redirects=False)
            assert response.status_code == 302, n
        web.browser.cookies.clear()
        assert_too_many(await web.browser.get("/facebook/login", follow_redirects=False))
        assert await count_states(web.store) == MAX_STATES_PER_CLIENT
        elsewhere = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=web.app, client=("10.1.2.3", 4567)), base_url=APP
        )
        async with elsewhere:
            assert (await elsewhere.get("/facebook/login")).status_code == 302
