"""A browser and two providers for route tests: the app and the sandbox, each over ASGI, one cookie jar.

The app's own outgoing client can reach only the sandbox; every request it makes is recorded, so a
test can prove that nothing was sent anywhere else.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html import unescape
from urllib.parse import urljoin

import httpx

from salesbot_sandbox import Sandbox, SandboxConfig
from service.app import create_app
from service.settings import Settings
from service.vault import TokenStore
from tests.conftest import base_environ

SHOPIFY_KEY, SHOPIFY_SECRET = "shopify-test-key", "shpss_test_secret_value"
FACEBOOK_APP_ID, FACEBOOK_SECRET = "424242", "fb_test_app_secret_value"
APP = "http://testserver"
SANDBOX = "http://sandbox"


def provider_environ(**overrides: str) -> dict[str, str]:
    return {
        "SHOPIFY_API_KEY": SHOPIFY_KEY,
        "SHOPIFY_API_SECRET": SHOPIFY_SECRET,
        "SHOPIFY_REDIRECT_URI": f"{APP}/shopify/callback",
        "SHOPIFY_SCOPES": "read_products,read_orders",
        "SHOPIFY_ADMIN_BASE_URL": f"{SANDBOX}/shopify/{{shop}}",
        "FACEBOOK_APP_ID": FACEBOOK_APP_ID,
        "FACEBOOK_APP_SECRET": FACEBOOK_SECRET,
        "FACEBOOK_REDIRECT_URI": f"{APP}/facebook/callback",
        "FACEBOOK_DIALOG_BASE_URL": f"{SANDBOX}/facebook",
        "FACEBOOK_GRAPH_BASE_URL": f"{SANDBOX}/graph",
        **overrides,
    }


class RecordingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.urls: list[httpx.URL] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(request.url)
        if request.url.host != "sandbox":
            raise httpx.ConnectError("tests allow outbound requests to the sandbox only")
        return await self.inner.handle_async_request(request)


@dataclass
class Web:
    settings: Settings
    sandbox: Sandbox
    store: TokenStore
    outbound: RecordingTransport
    app: object
    browser: httpx.AsyncClient = field(repr=False)

    def new_browser(self) -> httpx.AsyncClient:
        """Another browser: its own cookie jar, same app and sandbox."""
        return httpx.AsyncClient(
            mounts={APP: httpx.ASGITransport(app=self.app), SANDBOX: httpx.ASGITransport(app=self.sandbox.app)},
            base_url=APP,
            follow_redirects=True,
        )


# The sweep runs in the app's lifespan; tests that are not about it keep it out of their way (an hour).
NO_SWEEP = 3600.0


@asynccontextmanager
async def running_app(database_url: str, *, sweep_every: float = NO_SWEEP, **overrides: str) -> AsyncIterator[Web]:
    settings = Settings.from_environ(
        base_environ(DATABASE_URL=database_url, **provider_environ(**overrides)), env_file=None
    )
    sandbox = Sandbox(
        SandboxConfig(
            shopify_api_key=SHOPIFY_KEY,
            shopify_api_secret=SHOPIFY_SECRET,
            facebook_app_id=FACEBOOK_APP_ID,
            facebook_app_secret=FACEBOOK_SECRET,
            service_base_url=APP,
        )
    )
    outbound = RecordingTransport(httpx.ASGITransport(app=sandbox.app))
    provider_http = httpx.AsyncClient(transport=outbound, timeout=5.0)
    app = create_app(settings, http_client=provider_http, sweep_every=sweep_every)
    async with app.router.lifespan_context(app):
        web = Web(settings, sandbox, app.state.services.store, outbound, app, browser=None)  # type: ignore[arg-type]
        web.browser = web.new_browser()
        try:
            yield web
        finally:
            await web.browser.aclose()
            await provider_http.aclose()


def form_of(response: httpx.Response, button_id: str) -> tuple[str, dict[str, str]]:
    """The action and fields of the form that holds the button with this id (a tiny HTML reader)."""
    page = response.text
    for form in re.finditer(r"<form\b([^>]*)>(.*?)</form>", page, flags=re.S):
        if f'id="{button_id}"' not in form.group(2):
            continue
        action = re.search(r'action="([^"]*)"', form.group(1))
        fields = {
            unescape(name): unescape(value)
            for name, value in re.findall(r'<input[^>]*name="([^"]*)"[^>]*value="([^"]*)"', form.group(2))
        }
        return urljoin(str(response.url), unescape(action.group(1)) if action else ""), fields
    raise AssertionError(f"no form with #{button_id} on {response.url}")


async def click(browser: httpx.AsyncClient, page: httpx.Response, button_id: str) -> httpx.Response:
    action, fields = form_of(page, button_id)
    return await browser.post(action, data=fields)


async def connect_shopify(browser: httpx.AsyncClient, shop: str = "acme-7cu19ngr") -> httpx.Response:
    consent = await browser.get(f"/shopify/{shop}/login")
    assert consent.status_code == 200 and str(consent.url).startswith(SANDBOX), consent.text
    return await click(browser, consent, "allow")


async def connect_facebook(
    browser: httpx.AsyncClient, button: str = "allow", *, pages: list[str] | None = None
) -> httpx.Response:
    """Log in on the stand-in's dialog; when the app asks which Pages to connect, tick `pages` (None: leave
    the form as it comes, every Page that can be chosen ticked)."""
    consent = await browser.get("/facebook/login")
    assert consent.status_code == 200 and str(consent.url).startswith(SANDBOX), consent.text
    response = await click(browser, consent, button)
    if response.url.path == "/facebook/pages" and response.status_code == 200:
        return await choose_pages(browser, response, pages)
    return response


async def to_the_choice(browser: httpx.AsyncClient) -> httpx.Response:
    """Log in on the stand-in and stop at the app's question: which Pages?"""
    consent = await browser.get("/facebook/login")
    form = await click(browser, consent, "allow")
    assert form.status_code == 200 and form.url.path == "/facebook/pages", form.text
    return form


def checkboxes(page: httpx.Response) -> dict[str, tuple[bool, bool]]:
    """The choice form's Pages: id -> (ticked, disabled)."""
    boxes = {}
    for tag in re.findall(r'<input type="checkbox"[^>]*>', page.text):
        value = re.search(r'value="([^"]*)"', tag)
        assert value is not None, tag
        boxes[unescape(value.group(1))] = (" checked" in tag, " disabled" in tag)
    return boxes


async def choose_pages(
    browser: httpx.AsyncClient,
    page: httpx.Response,
    pages: list[str] | None = None,
    action: str = "connect",
    *,
    follow_redirects: bool = True,
) -> httpx.Response:
    """Submit the choice of Pages as a browser would: the ticked boxes (or `pages`), the CSRF token, the button."""
    if page.headers.get("content-type", "").startswith("application/json"):
        view = page.json()
        token = view["csrf_token"]
        ticked = [p["page_id"] for p in view["pages"] if p["can_choose"]] if pages is None else pages
    else:
        _action, fields = form_of(page, "connect-pages")
        token = fields["csrf_token"]
        boxes = checkboxes(page)
        ticked = [page_id for page_id, (on, _off) in boxes.items() if on] if pages is None else pages
    form = {"csrf_token": token, "action": action, "page": ticked}
    return await browser.post("/facebook/pages", data=form, follow_redirects=follow_redirects)


async def csrf_of(browser: httpx.AsyncClient) -> str:
    """This browser's CSRF token, as its status page carries it."""
    return (await status_json(browser))["csrf_token"]


async def status_json(browser: httpx.AsyncClient) -> dict:
    response = await browser.get("/", headers={"accept": "application/json"})
    assert response.status_code == 200
    return response.json()
