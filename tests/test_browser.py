"""The demo in a real headless Chromium: a newcomer's clicks through both flows, checked on the status page.

Needs Debian's chromium (/usr/bin/chromium); .ci/run installs it and sets REQUIRE_BROWSER=1 so that
there this test fails rather than skips when the browser is missing.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

from tests.demo_server import salesbot_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM) and not os.environ.get("REQUIRE_BROWSER"):
    pytest.skip("headless Chromium is not installed (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.browser
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def test_demo_click_through_both_flows_in_chromium() -> None:
    from playwright.sync_api import sync_playwright

    # Playwright gives the browser a new, empty profile of its own.
    with salesbot_server("demo") as base_url, sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page()
            page.goto(f"{base_url}/")
            assert "Nothing connected" in page.inner_text("body")

            # Shopify first: type the shop name, approve on the stand-in's consent page.
            page.fill("#connect-shopify input[name=shop]", "acme-7cu19ngr")
            page.click("#connect-shopify button")
            page.wait_for_selector("#allow")
            assert "acme-7cu19ngr.myshopify.com" in page.inner_text("body")
            page.click("#allow")
            page.wait_for_selector("#shops")
            account = page.inner_text("#account-uuid").strip()
            assert UUID.match(account)
            assert "acme-7cu19ngr.myshopify.com" in page.inner_text("#shops")

            # Then Facebook: every Page the grant covers is connected to the same account.
            page.click("#connect-facebook")
            page.wait_for_selector("#allow")
            page.click("#allow")
            page.wait_for_selector("#pages")
            assert page.inner_text("#account-uuid").strip() == account
            pages = page.inner_text("#pages")
            assert all(page_id in pages for page_id in ("101", "102", "103"))
            assert "acme-7cu19ngr.myshopify.com" in page.inner_text("#shops")
            assert "shpat_" not in page.content() and "EAA" not in page.content()

            # The uninstall webhook button: the store disappears, the Pages stay.
            page.click("text=Uninstall app from acme-7cu19ngr.myshopify.com")
            page.wait_for_selector("text=No store connected.")
            assert "101" in page.inner_text("#pages")
        finally:
            browser.close()
