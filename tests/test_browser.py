"""The demo in a real headless Chromium: a merchant's clicks through both flows, choosing Pages, the messages,
disconnecting, checked on the connections page and at the stand-ins; screenshots at desktop width and 375 px.

Needs Debian's chromium (/usr/bin/chromium); .ci/run installs it and sets REQUIRE_BROWSER=1 so that
there this test fails rather than skips when the browser is missing. With SAVE_SCREENSHOT=PATH the
desktop screenshot of the connections page is also copied to PATH (how docs/connections.png is made).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.demo_server import free_port, salesbot_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM) and not os.environ.get("REQUIRE_BROWSER"):
    pytest.skip("headless Chromium is not installed (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.browser
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SHOP = "acme-outfitters.myshopify.com"  # the stand-in names it "Acme Outfitters"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


ANSWERING = "Your bot answers on Acme Shoes and Acme Café with products from Acme Outfitters."


def headline(page) -> str:  # type: ignore[no-untyped-def]
    return page.inner_text("#headline").strip()


def page_event(page, page_id: str, event: str) -> None:  # type: ignore[no-untyped-def]
    """The demo's form: the stand-in's Facebook does `event` to the Page's token; the page comes back."""
    page.select_option("#event-page", page_id)
    page.select_option("#event-kind", event)
    page.click("#demo-page-event button")
    page.wait_for_selector("#headline")


def style(page, selector: str, prop: str) -> str:  # type: ignore[no-untyped-def]
    return page.eval_on_selector(selector, f"e => getComputedStyle(e).{prop}")


def box(page, selector: str) -> dict:  # type: ignore[no-untyped-def]
    return page.locator(selector).bounding_box()


def policy_violations(page) -> list[str]:  # type: ignore[no-untyped-def]
    """What Chromium reports refusing under a Content-Security-Policy (a form, a redirect, a style), as it happens."""
    refused: list[str] = []
    page.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )
    return refused


def test_demo_click_through_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    # Playwright gives the browser a new, empty profile of its own.
    with salesbot_server("demo") as base_url, sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            refused = policy_violations(page)
            first = page.goto(f"{base_url}/")
            assert first is not None and "frame-ancestors 'none'" in first.headers["content-security-policy"]
            assert first.headers["x-content-type-options"] == "nosniff"
            body = page.inner_text("body")
            assert "Nothing connected" in body
            # The first line says where the bot stands, in each state below.
            assert headline(page) == "Connect a Shopify store and a Facebook Page so the bot can answer shoppers."
            # Nothing to send webhooks for yet: no demo buttons, no sentence announcing them.
            assert "Send the webhooks" not in body and page.locator("section.demo button").count() == 0
            # The app's own stylesheet, and the two connect buttons alike.
            assert "system-ui" in style(page, "body", "fontFamily")
            shopify_button, facebook_button = "#connect-shopify button", "#connect-facebook"
            for prop in ("backgroundColor", "color", "fontSize", "paddingTop", "borderRadius"):
                assert style(page, shopify_button, prop) == style(page, facebook_button, prop), prop
            assert abs(box(page, shopify_button)["height"] - box(page, facebook_button)["height"]) < 1

            # Shopify's Cancel brings the merchant back to the app, not to a dead end.
            page.fill("#connect-shopify input[name=shop]", "acme-outfitters")
            page.click("#connect-shopify button")
            page.wait_for_selector("#allow")
            assert "Local stand-in for Shopify" in page.inner_text("body")
            assert "system-ui" in style(page, "body", "fontFamily")  # the app's stylesheet, not Times
            page.click("#cancel")
            page.wait_for_selector("#connect-shopify")
            assert page.url == f"{base_url}/"
            assert f"You did not finish installing the app on {SHOP}" in page.inner_text("#messages")

            # Shopify: the label names the field; the keyboard submits it.
            page.get_by_label("Shop name").fill("acme-outfitters")
            page.get_by_label("Shop name").press("Enter")
            page.wait_for_selector("#allow")
            page.click("#allow")
            page.wait_for_selector("#shops")
            account = page.text_content("#account-uuid").strip()  # under "Details", closed
            assert UUID.match(account) and not page.is_visible("#account-uuid")
            page.click("#account-details summary")
            assert page.is_visible("#account-uuid")
            assert headline(page) == "Connect a Facebook Page so the bot can answer shoppers."
            assert f"Connected {SHOP}" in page.inner_text("#messages")
            assert SHOP in page.text_content("#shops") and "Acme Outfitters" in page.inner_text(
                "#shops"
            )  # the domain: under Details

            # Facebook, cancelled first: a message on the page, not a dead end.
            page.click("#connect-facebook")
            page.wait_for_selector("#cancel")
            assert "Local stand-in for Facebook" in page.inner_text("body")
            page.click("#cancel")
            page.wait_for_selector("#messages")
            assert "You cancelled on Facebook" in page.inner_text("#messages")

            # Then for real, choosing two of the three Pages (one unticked with the keyboard).
            page.click("#connect-facebook")
            page.wait_for_selector("#allow")
            page.click("#allow")
            page.wait_for_selector("#choose-pages")
            page.screenshot(path=str(tmp_path / "choose-pages.png"), full_page=True)
            assert [page.is_checked(f"#choose-{n}") for n in ("101", "102", "103")] == [True, True, True]
            page.focus("#choose-102")
            page.keyboard.press("Space")
            assert not page.is_checked("#choose-102")
            page.click("#connect-pages")
            page.wait_for_selector("#pages")
            assert page.text_content("#account-uuid").strip() == account
            assert "Connected 2 Pages: Acme Shoes, Acme Café" in page.inner_text("#messages")
            assert headline(page) == ANSWERING
            pages = page.inner_text("#pages")
            assert "Acme Shoes (Page 101)" in pages and "Acme Café (Page 103)" in pages
            assert "Acme Outlet" not in pages and "Demo Merchant" in pages
            assert "shpat_" not in page.content() and "EAA" not in page.content()
            # Now there is something to send the webhooks for, and a Page a shopper can write to.
            assert page.locator("section.demo .actions button").count() == 2
            assert page.locator("#demo-message button").count() == 1

            page.screenshot(path=str(tmp_path / "connections-desktop.png"), full_page=True)
            if os.environ.get("SAVE_SCREENSHOT"):
                shutil.copyfile(tmp_path / "connections-desktop.png", os.environ["SAVE_SCREENSHOT"])
            # Readable at 375 px: nothing wider than the screen.
            page.set_viewport_size({"width": 375, "height": 812})
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            page.screenshot(path=str(tmp_path / "connections-375.png"), full_page=True)
            page.set_viewport_size({"width": 1100, "height": 900})

            # The messages were shown once.
            page.reload()
            assert page.locator("#messages").count() == 0

            # Facebook lets a Page's data access run out soon, then kills the other's token: the demo makes
            # the stand-in do it and checks the Page at once, as the sweep would.
            page_event(page, "103", "data_access_ending")
            ending = "Acme Café: Facebook's data access for it ends on"
            assert headline(page).startswith(ANSWERING + " " + ending)
            assert "open the app on Facebook before then" in headline(page)
            page_event(page, "101", "password_changed")
            assert headline(page).startswith(
                "Acme Shoes needs reconnecting: its Facebook password was changed. "
                "Your bot answers on Acme Café with products from Acme Outfitters. " + ending
            )
            assert "needs reconnecting" in page.inner_text("#page-101")
            # Recent activity tells both changes, newest first, as the sweep found them.
            activity = page.locator('#activity li[data-kind="health_changed"]').all_inner_texts()
            assert activity[0].startswith(
                "Acme Shoes needs reconnecting: its Facebook password was changed (found by the connection check), "
            )
            assert activity[1].startswith(ending)
            page.screenshot(path=str(tmp_path / "needs-reconnecting.png"), full_page=True)
            # Reconnecting (the same two Pages) gives new tokens, which start healthy.
            page.get_by_role("link", name="Reconnect Acme Shoes (Page 101)").click()
            page.wait_for_selector("#allow")
            page.click("#allow")
            page.wait_for_selector("#choose-pages")
            page.focus("#choose-102")
            page.keyboard.press("Space")
            page.click("#connect-pages")
            page.wait_for_selector("#pages")
            assert headline(page) == ANSWERING
            # Shopify uninstalls the app: the page says so once, and what the bot now lacks.
            page.click(f"text=Uninstall app from {SHOP}")
            page.wait_for_selector("#messages")
            assert "Acme Outfitters is no longer connected: the app was uninstalled from the store." in page.inner_text(
                "#messages"
            )
            assert (
                headline(page) == "Connect a Shopify store so the bot has products to sell on Acme Shoes and Acme Café."
            )
            page.reload()
            assert page.locator("#messages").count() == 0  # said once
            page.get_by_label("Shop name").fill("acme-outfitters")
            page.get_by_label("Shop name").press("Enter")
            page.wait_for_selector("#allow")
            page.click("#allow")
            page.wait_for_selector("#shops")
            assert headline(page) == ANSWERING

            # Disconnect one Page, confirming first: the grant stays for the other.
            page.get_by_role("link", name="Disconnect Acme Café (Page 103)").click()
            page.wait_for_selector("#confirm")
            assert "Disconnect Acme Café?" in page.inner_text("h1")
            page.screenshot(path=str(tmp_path / "confirm.png"), full_page=True)
            page.click("#confirm")
            page.wait_for_selector("#messages")
            assert "Disconnected Acme Café" in page.inner_text("#messages")
            assert "Acme Café" not in page.inner_text("#pages") and "Acme Shoes" in page.inner_text("#pages")

            # The store: Shopify is told, then its rows go.
            page.get_by_role("link", name="Disconnect Acme Outfitters").click()
            page.click("#confirm")
            page.wait_for_selector("text=No store connected.")
            assert "removed at Shopify" in page.inner_text("#messages")

            # The last Page: the user's grant is removed at Facebook too.
            page.get_by_role("link", name="Disconnect Acme Shoes (Page 101)").click()
            page.click("#confirm")
            page.wait_for_selector("text=No Page connected.")
            assert "removed at Facebook" in page.inner_text("#messages")
            page.screenshot(path=str(tmp_path / "disconnected-desktop.png"), full_page=True)
            assert refused == []  # both flows, every form and its redirects, under the pages' policy
        finally:
            browser.close()
        revoked = httpx.get(f"{base_url}/sandbox/revocations", timeout=10).json()
    assert [(r["provider"], r["subject"]) for r in revoked] == [("shopify", SHOP), ("facebook", "9001")]
    for name in ("connections-desktop.png", "connections-375.png", "choose-pages.png", "confirm.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG"), name


# Nine Pages named with 73 Japanese characters each: in a signed cookie with the messages, a 4,913-byte
# Set-Cookie that Chromium dropped, logging the merchant out with the Pages stored.
LONG_NAMES = [[str(101 + n), ("アクメ靴店オンラインストア公式ページ" * 5)[:72] + str(n)] for n in range(9)]


def test_nine_long_named_pages_and_cross_origin_consent_pages_keep_the_merchant_in(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {
        "SALESBOT_DEMO_PAGES": json.dumps(LONG_NAMES),
        # The stand-ins under another name of the same server: consent pages on another origin, as Shopify's
        # and Facebook's are, so the pages' form-action meets the redirects a real connect makes.
        "SALESBOT_DEMO_PROVIDERS_URL": f"http://localhost:{port}",
    }
    with salesbot_server("demo", env=env, port=port) as base_url, sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            refused = policy_violations(page)
            first = page.goto(f"{base_url}/")
            assert first is not None and f"http://localhost:{port}" in first.headers["content-security-policy"]
            page.get_by_label("Shop name").fill("acme-outfitters")
            page.get_by_label("Shop name").press("Enter")
            page.wait_for_selector("#allow")
            assert page.url.startswith(f"http://localhost:{port}/sandbox/shopify/")  # another origin
            page.click("#allow")
            page.wait_for_selector("#shops")
            account = page.text_content("#account-uuid").strip()  # under "Details", closed
            assert UUID.match(account)

            page.click("#connect-facebook")
            page.wait_for_selector("#allow")
            assert page.url.startswith(f"http://localhost:{port}/sandbox/facebook/")
            page.click("#allow")
            page.wait_for_selector("#choose-pages")
            assert page.locator("#choose-pages input[type=checkbox]:checked").count() == 9
            page.click("#connect-pages")
            page.wait_for_selector("#pages")
            # Still signed in: the same account, its nine Pages, the message naming them.
            assert page.text_content("#account-uuid").strip() == account
            assert page.locator("#pages > li").count() == 9
            assert f"Connected 9 Pages: {LONG_NAMES[0][1]}" in page.inner_text("#messages")
            [session] = [c for c in page.context.cookies() if c["name"] == "salesbot_session"]
            assert len(session["value"]) < 100
            page.reload()
            assert page.text_content("#account-uuid").strip() == account
            page.screenshot(path=str(tmp_path / "nine-pages.png"), full_page=True)
            assert refused == []
        finally:
            browser.close()
