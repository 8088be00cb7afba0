"""Shopify webhooks: signature, de-duplication, uninstall racing a reinstall, compliance topics, and the
shop acted on coming from the signed body (never from a header, never from a callback's signature)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

from service.settings import Settings
from tests.routes.helpers import snapshot
from tests.web import SHOPIFY_SECRET, click, connect_shopify, running_app, status_json

SHOP = "acme-7cu19ngr.myshopify.com"
VICTIM = "victim-shop.myshopify.com"


def signed(body: bytes, secret: str = SHOPIFY_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


async def send(web, topic: str, *, webhook_id: str | None = None, extra: dict | None = None):
    body, headers = web.sandbox.shopify_webhook(shop=SHOP, topic=topic, webhook_id=webhook_id)  # the documented body
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


def headers_for(signature: str, topic: str, shop: str, webhook_id: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-Sha256": signature,
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Webhook-Id": webhook_id,
    }


async def test_a_callbacks_signature_replayed_as_a_webhook_for_another_shop_is_refused(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser, "victim-shop")
        # The attacker installs the app on a store of their own and keeps the callback URL.
        attacker = web.new_browser()
        consent = await attacker.get("/shopify/attacker-shop/login")
        attacker.follow_redirects = False
        callback = (await click(attacker, consent, "allow")).headers["location"]
        pairs = parse_qsl(urlsplit(callback).query, keep_blank_values=True)
        hex_hmac = dict(pairs)["hmac"]
        body = "&".join(f"{k}={v}" for k, v in sorted(pair for pair in pairs if pair[0] != "hmac")).encode()
        forged = base64.b64encode(bytes.fromhex(hex_hmac)).decode()
        assert forged == signed(body)  # the premise: a body our secret really signed, in the webhook's encoding
        before = await snapshot(web.store)
        for topic in ("app/uninstalled", "shop/redact", "customers/redact"):
            response = await web.browser.post(
                "/shopify/webhooks", content=body, headers=headers_for(forged, topic, VICTIM, f"forged-{topic}")
            )
            assert response.status_code == 401 and response.json()["error"] == "invalid_webhook_body", response.text
        assert await snapshot(web.store) == before
        assert await web.store.get_token("SHOPIFY_ACCESS_TOKEN_victim-shop") is not None


async def test_a_signed_body_that_is_not_a_json_object_is_refused(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        before = await snapshot(web.store)
        for body in (b"shop_domain=" + SHOP.encode(), b"[]", b'"text"', b"", b"{"):
            headers = headers_for(signed(body), "app/uninstalled", SHOP, "not-json")
            response = await web.browser.post("/shopify/webhooks", content=body, headers=headers)
            assert response.status_code == 401 and response.json()["error"] == "invalid_webhook_body", body
        assert await snapshot(web.store) == before


async def test_the_shop_comes_from_the_signed_body_and_another_shop_in_the_header_is_refused(
    migrated: Settings,
) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser, "victim-shop")
        await connect_shopify(web.new_browser(), "attacker-shop")
        before = await snapshot(web.store)
        for topic in ("app/uninstalled", "shop/redact"):
            # A genuine delivery for the attacker's own shop, its header rewritten to name the victim.
            body, headers = web.sandbox.shopify_webhook(shop="attacker-shop.myshopify.com", topic=topic)
            response = await web.browser.post(
                "/shopify/webhooks", content=body, headers={**headers, "X-Shopify-Shop-Domain": VICTIM}
            )
            assert response.status_code == 401 and response.json()["error"] == "webhook_shop_mismatch"
        assert await snapshot(web.store) == before
        # Without the header, the body's shop is the one acted on.
        body, headers = web.sandbox.shopify_webhook(shop="attacker-shop.myshopify.com", topic="app/uninstalled")
        del headers["X-Shopify-Shop-Domain"]
        response = await web.browser.post("/shopify/webhooks", content=body, headers=headers)
        assert response.status_code == 200 and response.json()["deleted"] == 1
        assert await web.store.get_token("SHOPIFY_ACCESS_TOKEN_attacker-shop") is None
        assert await web.store.get_token("SHOPIFY_ACCESS_TOKEN_victim-shop") is not None


async def test_a_body_without_its_topics_fields_is_refused_never_read_as_delete_everything(
    migrated: Settings,
) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser, "victim-shop")
        before = await snapshot(web.store)
        complete = {
            topic: web.sandbox.shopify_webhook_payload(shop=VICTIM, topic=topic)
            for topic in ("app/uninstalled", "shop/redact", "customers/redact", "customers/data_request")
        }
        bodies = [
            ("app/uninstalled", {"shop_domain": VICTIM}),  # what a compliance body has, not the shop resource
            ("app/uninstalled", {k: v for k, v in complete["app/uninstalled"].items() if k != "id"}),
            ("app/uninstalled", {**complete["app/uninstalled"], "myshopify_domain": "victim-shop.example.com"}),
            ("shop/redact", {}),
            ("shop/redact", {"shop_domain": VICTIM}),
            ("shop/redact", {"shop_id": "1", "shop_domain": VICTIM}),
            ("customers/redact", complete["shop/redact"]),
            ("customers/redact", {**complete["customers/redact"], "orders_to_redact": None}),
            ("customers/data_request", {**complete["customers/data_request"], "customer": None}),
        ]
        for n, (topic, payload) in enumerate(bodies):
            body, headers = web.sandbox.shopify_webhook(shop=VICTIM, topic=topic, payload=payload, webhook_id=f"w{n}")
            response = await web.browser.post("/shopify/webhooks", content=body, headers=headers)
            assert response.status_code == 400 and response.json()["error"] == "webhook_fields_missing", (n, topic)
        assert await snapshot(web.store) == before
        # The same ids with complete bodies are not duplicates: a refused delivery was never recorded.
        for n, topic in enumerate(("app/uninstalled", "customers/data_request")):
            body, headers = web.sandbox.shopify_webhook(shop=VICTIM, topic=topic, webhook_id=f"w{n}")
            response = await web.browser.post("/shopify/webhooks", content=body, headers=headers)
            assert response.status_code == 200 and response.json()["status"] == "ok", response.text


async def test_uninstall_and_compliance_webhooks_need_no_token_even_an_expired_one(migrated: Settings) -> None:
    # Other integrations fail these forever once their stored token expired (they refresh first, and the
    # refresh is refused after an uninstall). Here nothing is refreshed, nothing is sent anywhere.
    async with running_app(migrated.database_url) as web:
        await connect_shopify(web.browser)
        key = "SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr"
        long_ago = datetime.now(UTC) - timedelta(days=200)
        await web.store.set_metadata(key, expires_at=long_ago, refresh_expires_at=long_ago + timedelta(days=90))
        web.sandbox.revoke_shopify(SHOP)  # as the uninstall itself does: any refresh would be refused
        sent_before = list(web.outbound.urls)
        answers = {}
        for topic in ("customers/data_request", "customers/redact", "app/uninstalled", "shop/redact"):
            response = await send(web, topic)
            assert response.status_code == 200, (topic, response.text)
            answers[topic] = response.json()["deleted"]
        assert answers == {"customers/data_request": 0, "customers/redact": 0, "app/uninstalled": 1, "shop/redact": 1}
        assert web.outbound.urls == sent_before  # no refresh, no Admin API call, nothing at all
        assert await web.store.get_token(key) is None and await web.store.get_token("USER_UUID_acme-7cu19ngr") is None
        view = await status_json(web.browser)
        assert [(r["subject"], r["reason"]) for r in view["removed"]] == [(SHOP, "uninstalled")]
