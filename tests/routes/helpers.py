"""Signing callbacks the way Shopify does (independently of service.providers) and snapshotting the store."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from sqlalchemy import text

from service.vault import TokenStore
from tests.web import SHOPIFY_SECRET


async def snapshot(store: TokenStore) -> list[tuple]:
    """Every stored row of tokens and accounts, raw: equality means nothing changed."""
    async with store.engine.connect() as connection:
        tokens = (await connection.execute(text("SELECT * FROM tokens ORDER BY key"))).all()
        accounts = (await connection.execute(text("SELECT * FROM accounts ORDER BY uuid"))).all()
    return [("tokens", *row) for row in tokens] + [("accounts", *row) for row in accounts]


async def count_states(store: TokenStore) -> int:
    async with store.engine.connect() as connection:
        return (await connection.execute(text("SELECT COUNT(*) FROM oauth_states"))).scalar_one()


async def start_shopify(browser: httpx.AsyncClient, shop: str = "acme-7cu19ngr") -> str:
    response = await browser.get(f"/shopify/{shop}/login", follow_redirects=False)
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["state"][0]


def shopify_callback(params: dict[str, str], *, secret: str = SHOPIFY_SECRET) -> str:
    message = "&".join(f"{key}={value}" for key, value in sorted(params.items()))
    signature = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return "/shopify/callback?" + urlencode({**params, "hmac": signature})


def callback_params(state: str, shop: str = "acme-7cu19ngr.myshopify.com", **extra: str) -> dict[str, str]:
    return {"code": "not-a-real-code", "shop": shop, "state": state, "timestamp": str(int(time.time())), **extra}


def error_code(response: httpx.Response) -> str:
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()["error"]
    marker = 'data-code="'
    start = response.text.index(marker) + len(marker)
    return response.text[start : response.text.index('"', start)]


def refused_on_status_page(response: httpx.Response) -> str:
    """The code of the refusal a browser was shown: a step that ends on the status page with a message."""
    assert response.status_code == 200 and response.url.path == "/", (response.status_code, response.url)
    return error_code(response)
