"""`salesbot demo` makes a read key and a proxy key of the HTTP API and lists them on its page, so the
examples of docs/api.md run against it: the Page's token with the read key, a message through the proxy."""

from __future__ import annotations

import json
import re

import httpx

from tests.demo_server import salesbot_server
from tests.test_demo_forms import connect_pages, connect_store


def test_the_demo_page_lists_keys_that_the_api_takes() -> None:
    with salesbot_server("demo") as base_url, httpx.Client(base_url=base_url, follow_redirects=True, timeout=10) as b:
        connect_store(b)
        connect_pages(b)
        page = b.get("/", headers={"accept": "text/html"}).text
        shown = dict(re.findall(r'id="demo-key-(read|proxy)">(sbk_[0-9a-f]{8}_[A-Za-z0-9_-]{43})<', page))
        assert set(shown) == {"read", "proxy"}
        with httpx.Client(base_url=base_url, timeout=10) as bot:  # a bot: no cookie, only the key
            read = bot.get("/api/v1/pages/101", headers={"authorization": f"Bearer {shown['read']}"})
            assert read.status_code == 200, read.text
            assert read.json()["token"] and read.json()["shop"] == "acme-demo.myshopify.com"
            message = {"recipient": {"id": "7001"}, "message": {"text": "Hello from a Node bot"}}
            sent = bot.post(
                "/api/v1/pages/101/messages",
                content=json.dumps(message),
                headers={"authorization": f"Bearer {shown['proxy']}", "content-type": "application/json"},
            )
            assert sent.status_code == 200, sent.text
            assert sent.json()["recipient_id"] == "7001"
        assert "Hello from a Node bot" in b.get("/sandbox/messenger").text  # the stand-in shows what was sent
