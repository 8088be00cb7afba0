"""What the providers' revocation webhooks delete, each in one transaction, each safe to repeat.

- Shopify `app/uninstalled`: the shop's token (already revoked by Shopify). The shop's account link
  stays, so a reinstall lands in the same account. An uninstall older than the stored token (a
  reinstall raced the webhook) deletes nothing.
- Shopify `shop/redact` (48 h after uninstall): the token and the account link.
- Facebook deauthorize (user_id): the user's token and every Page token their grant gave; the Pages'
  account links stay, still theirs, so the same user reconnecting finds the same account. A Page
  removing the app (profile_id): that Page's token.
- Facebook data deletion: as deauthorize, plus the Pages' account links; recorded with a code.
- A signed_request handled once (by its payload's digest) is a duplicate: nothing more is deleted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service import keys
from service.models import DeletionRequest, WebhookDelivery, utcnow
from service.providers import shopify
from service.store import TOKENS, TokenStore

DELIVERIES = WebhookDelivery.__table__
DELETIONS = DeletionRequest.__table__
UNINSTALL, SHOP_REDACT = "app/uninstalled", "shop/redact"
ACKNOWLEDGED_TOPICS = frozenset({"customers/data_request", "customers/redact"})  # we keep no customer data


@dataclass(frozen=True)
class WebhookOutcome:
    status: str  # "ok" | "duplicate" | "ignored"
    deleted: int = 0


async def shopify_webhook(
    store: TokenStore, *, webhook_id: str, topic: str, shop_domain: str | None, triggered_at: datetime | None
) -> WebhookOutcome:
    try:
        async with store.write_transaction() as connection:
            # Recording the delivery and acting on it commit together: a failure redoes both.
            await connection.execute(
                insert(DELIVERIES).values(webhook_id=webhook_id, topic=topic, shop=shop_domain, received_at=utcnow())
            )
            deleted = 0
            if topic in (UNINSTALL, SHOP_REDACT) and shop_domain is not None:
                deleted = await _forget_shop(connection, shop_domain, topic, triggered_at)
    except IntegrityError:
        return WebhookOutcome("duplicate")
    if topic not in ACKNOWLEDGED_TOPICS | {UNINSTALL, SHOP_REDACT}:
        return WebhookOutcome("ignored")
    return WebhookOutcome("ok", deleted)


async def _forget_shop(connection: AsyncConnection, domain: str, topic: str, triggered_at: datetime | None) -> int:
    shop_key = shopify.shop_key(domain)
    token_key = keys.shopify_token_key(shop_key)
    if topic == UNINSTALL and triggered_at is not None:
        updated = (await connection.execute(select(TOKENS.c.updated_at).where(TOKENS.c.key == token_key))).scalar()
        if updated is not None and updated > triggered_at:
            return 0
    doomed = [token_key] if topic == UNINSTALL else [token_key, keys.shopify_uuid_key(shop_key)]
    return (await connection.execute(delete(TOKENS).where(TOKENS.c.key.in_(doomed)))).rowcount


async def _forget_user(connection: AsyncConnection, user_id: str, *, erase_links: bool) -> int:
    # Page tokens and Page links both carry the user whose grant made them (granted_by).
    page_ids = (
        (await connection.execute(select(TOKENS.c.subject).where(TOKENS.c.granted_by == user_id))).scalars().all()
    )
    doomed = [keys.facebook_user_token_key(user_id)]
    if erase_links:
        doomed += [keys.page_uuid_key(page_id) for page_id in page_ids if page_id]
    granted_tokens = and_(TOKENS.c.granted_by == user_id, TOKENS.c.type == "token")
    result = await connection.execute(delete(TOKENS).where(or_(TOKENS.c.key.in_(doomed), granted_tokens)))
    return result.rowcount


async def _once(
    store: TokenStore, *, delivery_id: str, topic: str, act: Callable[[AsyncConnection], Awaitable[int]]
) -> int | None:
    """Run `act` unless `delivery_id` was handled before (then None): recorded and acted on together."""
    try:
        async with store.write_transaction() as connection:
            await connection.execute(
                insert(DELIVERIES).values(webhook_id=delivery_id, topic=topic, received_at=utcnow())
            )
            return await act(connection)
    except IntegrityError:
        return None


async def deauthorize_user(store: TokenStore, user_id: str, *, request_digest: str) -> int | None:
    """Delete the user's tokens; None when this signed_request (by its digest) was handled before."""
    return await _once(
        store,
        delivery_id=f"facebook:{request_digest}",
        topic="facebook/deauthorize",
        act=lambda connection: _forget_user(connection, user_id, erase_links=False),
    )


async def remove_page(store: TokenStore, page_id: str, *, request_digest: str) -> int | None:
    async def act(connection: AsyncConnection) -> int:
        result = await connection.execute(delete(TOKENS).where(TOKENS.c.key == keys.page_token_key(page_id)))
        return result.rowcount

    return await _once(store, delivery_id=f"facebook:{request_digest}", topic="facebook/deauthorize", act=act)


async def delete_user_data(store: TokenStore, user_id: str, *, request_digest: str) -> tuple[str, int]:
    """Erase what we hold about a Facebook user; return the confirmation code and the rows deleted.

    The code is the request's keyed digest, so a replay of one request finds its own row (the primary
    key) and erases nothing more: it answers the same code with 0 rows."""
    code = request_digest[:20]
    try:
        async with store.write_transaction() as connection:
            deleted = await _forget_user(connection, user_id, erase_links=True)
            await connection.execute(
                insert(DELETIONS).values(
                    confirmation_code=code,
                    facebook_user_id=user_id,
                    status="completed",
                    deleted_rows=deleted,
                    requested_at=utcnow(),
                )
            )
    except IntegrityError:
        return code, 0
    return code, deleted


async def deletion_request(store: TokenStore, code: str) -> dict | None:
    async with store.engine.connect() as connection:
        row = (
            (await connection.execute(select(DELETIONS).where(DELETIONS.c.confirmation_code == code[:64])))
            .mappings()
            .first()
        )
    return None if row is None else dict(row)
