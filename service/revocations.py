"""What the providers' revocation webhooks delete, each safe to repeat (DESIGN.md, "OAuth").

- Shopify `app/uninstalled`: the shop's token (already revoked by Shopify). The shop's account link
  stays, so a reinstall lands in the same account. An uninstall older than the stored token (a
  reinstall raced the webhook) deletes nothing.
- Shopify `shop/redact` (48 h after uninstall): the token and the account link.
- Facebook deauthorize (user_id): the user's token and every Page token their grant gave; the Pages'
  account links stay, still theirs, so the same user reconnecting finds the same account. A Page
  removing the app (profile_id): that Page's token.
- Facebook data deletion: as deauthorize, plus the Pages' account links; recorded with a code.

Each removal of a store or Page is remembered (with its name and account) until the merchant's page
has told it once. None of this needs a token: nothing is refreshed, nothing is sent to the provider,
so an uninstall is processed even when the stored token has long expired.

A delivery (a webhook id, a signed_request's digest) seen before is a duplicate and deletes nothing.
Otherwise the vault deletes first and the delivery is recorded after: the deletions are idempotent,
so a crash in between only means the provider's retry deletes nothing more and records it. Each
deletion writes its events (by `webhook`) in its own transaction; shop/redact and data deletion erase
the subjects' earlier events and leave one saying so (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from service import pending_grants
from service.models import DeletionRequest, WebhookDelivery, utcnow
from service.providers import shopify
from service.vault import TokenStore
from service.vault import events as kinds
from service.vault.events import Actor

DELIVERIES = WebhookDelivery.__table__
DELETIONS = DeletionRequest.__table__
UNINSTALL, SHOP_REDACT = "app/uninstalled", "shop/redact"
ACKNOWLEDGED_TOPICS = frozenset({"customers/data_request", "customers/redact"})  # we keep no customer data
BY_WEBHOOK = Actor.of(kinds.WEBHOOK)


@dataclass(frozen=True)
class WebhookOutcome:
    status: str  # "ok" | "duplicate" | "ignored"
    deleted: int = 0


async def _seen(store: TokenStore, table: Any, column: Any, value: str) -> bool:
    async with store.engine.connect() as connection:
        return (await connection.execute(select(column).where(column == value))).first() is not None


async def _record(store: TokenStore, row: Any) -> bool:
    """Insert a bookkeeping row; False when another delivery of the same id recorded it first."""

    def insert_row(connection: Connection) -> None:
        connection.execute(row)

    try:
        await store.run_write(insert_row)
    except IntegrityError:
        return False
    return True


async def _once(
    store: TokenStore, *, delivery_id: str, topic: str, shop: str | None, act: Callable[[], Awaitable[int]]
) -> int | None:
    """Run `act` unless `delivery_id` was handled before (then None), and record it as handled."""
    if await _seen(store, DELIVERIES, DELIVERIES.c.webhook_id, delivery_id):
        return None
    deleted = await act()
    row = insert(DELIVERIES).values(webhook_id=delivery_id, topic=topic, shop=shop, received_at=utcnow())
    return deleted if await _record(store, row) else None


async def shopify_webhook(
    store: TokenStore, *, webhook_id: str, topic: str, shop_domain: str | None, triggered_at: datetime | None
) -> WebhookOutcome:
    async def act() -> int:
        if topic not in (UNINSTALL, SHOP_REDACT) or shop_domain is None:
            return 0
        shop_key = shopify.shop_key(shop_domain)
        if topic == UNINSTALL:
            return await store.forget_shop(
                shop_key,
                with_link=False,
                not_after=triggered_at,
                event=kinds.UNINSTALLED,
                by=BY_WEBHOOK,
                removed="uninstalled",
            )
        return await store.forget_shop(
            shop_key, with_link=True, event=kinds.REDACTED, erase_history=True, by=BY_WEBHOOK, removed="shop_redacted"
        )

    deleted = await _once(store, delivery_id=webhook_id, topic=topic, shop=shop_domain, act=act)
    if deleted is None:
        return WebhookOutcome("duplicate")
    if topic not in ACKNOWLEDGED_TOPICS | {UNINSTALL, SHOP_REDACT}:
        return WebhookOutcome("ignored")
    return WebhookOutcome("ok", deleted)


async def deauthorize_user(store: TokenStore, user_id: str, *, request_digest: str) -> int | None:
    """Delete the user's tokens (and any login of theirs still waiting for a choice of Pages); None when
    this signed_request (by its digest) was handled before."""

    async def act() -> int:
        await pending_grants.forget_user(store, user_id)
        return await store.forget_facebook_user(
            user_id, erase_links=False, event=kinds.DEAUTHORIZED, by=BY_WEBHOOK, removed="deauthorized"
        )

    return await _once(
        store, delivery_id=f"facebook:{request_digest}", topic="facebook/deauthorize", shop=None, act=act
    )


async def remove_page(store: TokenStore, page_id: str, *, request_digest: str) -> int | None:
    return await _once(
        store,
        delivery_id=f"facebook:{request_digest}",
        topic="facebook/deauthorize",
        shop=None,
        act=lambda: store.forget_page(page_id, event=kinds.DEAUTHORIZED, by=BY_WEBHOOK, removed="page_removed"),
    )


async def delete_user_data(store: TokenStore, user_id: str, *, request_digest: str) -> tuple[str, int]:
    """Erase what we hold about a Facebook user; return the confirmation code and the rows deleted.

    The code is the request's keyed digest, so a replay of one request finds its own row and erases
    nothing more: it answers the same code with 0 rows."""
    code = request_digest[:20]
    if await _seen(store, DELETIONS, DELETIONS.c.confirmation_code, code):
        return code, 0
    await pending_grants.forget_user(store, user_id)
    deleted = await store.forget_facebook_user(
        user_id, erase_links=True, event=kinds.DATA_DELETED, by=BY_WEBHOOK, removed="data_deleted"
    )
    row = insert(DELETIONS).values(
        confirmation_code=code,
        facebook_user_id=user_id,
        status="completed",
        deleted_rows=deleted,
        requested_at=utcnow(),
    )
    return (code, deleted) if await _record(store, row) else (code, 0)


async def deletion_request(store: TokenStore, code: str) -> dict | None:
    async with store.engine.connect() as connection:
        row = (
            (await connection.execute(select(DELETIONS).where(DELETIONS.c.confirmation_code == code[:64])))
            .mappings()
            .first()
        )
    return None if row is None else dict(row)
