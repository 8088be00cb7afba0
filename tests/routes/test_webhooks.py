"""Shopify webhooks: signature, de-duplication, uninstall racing a reinstall, compliance topics."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

from service.settings import Settings
from tests.routes.helpers import snapshot
from tests.web import SHOPIFY_SECRET, connect_shopify, running_app, status_json

SHOP = "acme-7cu19ngr.myshopify.com"


def signed(body: bytes, secret: str = SHOPIFY_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


async def send(web, topic: str, *, webhook_id: str | None = None, extra: dict | None = None):
    body, headers = web.sandbox.shopify_webhook(
        shop=SHOP, topic=topic, payload={"shop_domain": SHOP}, webhook_id=webhook_id
    )
    return await web.browser.post("/shopify/webhooks", content=body, headers={**headers, **(extra or {})})


async def test_uninstall_deletes_the_token_once(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        first = await send(web, "app/uninstalled", webhook_id="wh-1")
        assert first.status_code == 200 and first.json() == {"status": "ok", "topic": "app/uninstalled", "deleted": 1}
        assert await web.store.get_token("SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr") is None
        assert await web.store.get_token("USER_UUID_acme-7cu19ngr") is not None
        assert (await status_json(web.browser))["shops"] == []
        after_first = await snapshot(web.store)
        duplicate = await send(web, "app/uninstalled", webhook_id="wh-1")
        assert duplicate.status_code == 200 and duplicate.json()["status"] == "duplicate"
        assert await snapshot(web.store) == after_first


async def test_an_uninstall_older_than_a_reinstall_keeps_the_new_token(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        earlier = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        response = await send(web, "app/uninstalled", extra={"X-Shopify-Triggered-At": earlier})
        assert response.status_code == 200 and response.json()["deleted"] == 0
        assert await web.store.get_token("SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr") is not None


async def test_shop_redact_erases_the_link_too(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        response = await send(web, "shop/redact")
        assert response.status_code == 200 and response.json()["deleted"] == 2
        assert await web.store.get_token("USER_UUID_acme-7cu19ngr") is None


async def test_customer_topics_are_acknowledged(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        before = await snapshot(web.store)
        for topic in ("customers/data_request", "customers/redact"):
            response = await send(web, topic)
            assert response.status_code == 200 and response.json()["status"] == "ok"
        assert await snapshot(web.store) == before


async def test_bad_signatures_get_401_and_change_nothing(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        before = await snapshot(web.store)
        body = json.dumps({"shop_domain": SHOP}).encode()
        base = {"X-Shopify-Topic": "app/uninstalled", "X-Shopify-Shop-Domain": SHOP, "X-Shopify-Webhook-Id": "x"}
        for signature in (None, "", signed(body, "wrong-secret"), signed(body)[:-4], signed(body + b" ")):
            headers = dict(base) if signature is None else {**base, "X-Shopify-Hmac-Sha256": signature}
            response = await web.browser.post("/shopify/webhooks", content=body, headers=headers)
            assert response.status_code == 401 and response.json()["error"] == "invalid_webhook_signature"
        assert await snapshot(web.store) == before
