"""Every token row the service writes for a provider, built in one place per provider.

What metadata a Shopify token carries when a store is connected and when it is refreshed, what a
Facebook user's grant and each of its Pages carry, and the rows an import takes from the seed's
environment names (DESIGN.md, "Data"). Routes, the refresher and the jobs call these; none of them
spells a row out itself, so a column added to a provider's rows is added here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from service import keys
from service.providers.facebook import Page
from service.providers.shopify import ShopifyToken, shop_key
from service.vault.schema import TokenWrite

# --- Shopify ---------------------------------------------------------------------------------------


def shopify_connected(domain: str, token: ShopifyToken, *, granted: Sequence[str], name: str | None) -> TokenWrite:
    """A store's token as its install gave it. Without a name (Shopify did not say) the row keeps the
    last one stored: a connect never fails for the lack of a name."""
    metadata: dict[str, object] = {
        "provider": keys.SHOPIFY,
        "subject": domain,
        "scopes": ",".join(granted),
        "expires_at": token.expires_at,
        "refresh_token": token.refresh_token,
        "refresh_expires_at": token.refresh_expires_at,
        "refresh_lease_until": None,
    }
    if name is not None:
        metadata["name"] = name
    return TokenWrite(keys.shopify_token_key(shop_key(domain)), token.access_token, "token", metadata)


def shopify_refreshed(key: str, fresh: ShopifyToken, *, scopes_before: str | None) -> TokenWrite:
    """The pair a refresh gave, under the row's key, ending its lease. Shopify may leave `scope` out of a
    refresh answer: the scopes stored before stand."""
    return TokenWrite(
        key,
        fresh.access_token,
        "token",
        {
            "refresh_token": fresh.refresh_token,
            "expires_at": fresh.expires_at,
            "refresh_expires_at": fresh.refresh_expires_at,
            "scopes": ",".join(fresh.scopes) or scopes_before,
            "refresh_lease_until": None,
        },
    )


# --- Facebook --------------------------------------------------------------------------------------


def facebook_user(
    user_id: str, token: str, *, scopes: str, expires_at: datetime | None, name: str | None
) -> TokenWrite:
    """A Facebook user's grant: the long-lived user token the Pages' tokens came from."""
    metadata = {"provider": keys.FACEBOOK, "subject": user_id, "scopes": scopes, "expires_at": expires_at, "name": name}
    return TokenWrite(keys.facebook_user_token_key(user_id), token, "token", metadata)


def facebook_page(page: Page, *, granted_by: str, scopes: str) -> TokenWrite:
    """A Page's token. From a long-lived user token it does not expire by time: it dies with the grant."""
    metadata = {
        "provider": keys.FACEBOOK,
        "subject": page.id,
        "granted_by": granted_by,
        "scopes": scopes,
        "expires_at": None,
        "name": page.name or None,
        "category": page.category,
        "tasks": ",".join(page.tasks) or None,
    }
    return TokenWrite(keys.page_token_key(page.id), page.access_token, "token", metadata)


# --- the seed's environment names (import-env) -------------------------------------------------------


def from_environment(name: str, value: str) -> TokenWrite:
    """A row for a name of the seed's vocabulary: an account UUID entry, the bare seed key (a Facebook
    token, as the seed used it), or a token whose provider its key names."""
    info = keys.describe_key(name)
    if info is not None and info.is_uuid:
        return TokenWrite(name, value, "uuid")
    if info is None:
        return TokenWrite(name, value, "token", {"provider": keys.FACEBOOK})
    return TokenWrite(name, value, "token")
