"""Disconnecting a store or a Page, for real (DESIGN.md, "The connections page").

- A store: the app gives up its access at Shopify (`DELETE /admin/api_permissions/current.json` with
  the shop's token), then the shop's token and account link are deleted here.
- A Page: its token and link are deleted here; when it was the last Page its Facebook user granted,
  the user's grant is removed at Facebook too (`DELETE /{user-id}/permissions` with the user token and
  appsecret_proof), and the user token is deleted.

A provider that does not answer never keeps our side: the local deletion is done either way (the
token is gone from here), and the outcome says what the merchant still has to do at the provider.
Only connections of the caller's own account are touched; anything else is "not found".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from service import keys
from service.errors import NotFound, ServiceError, TokenRevoked
from service.providers import facebook, shopify
from service.settings import Settings
from service.vault import TokenRecord, TokenStore
from service.vault.events import DISCONNECTED

# What became of the access at the provider: removed; already gone (it refused the token); not told
# (it did not answer, or no token was left to ask with, or the login that granted it is another account's).
DONE, NOTHING_LEFT, NOT_TOLD, NO_TOKEN = "revoked", "nothing_left", "provider_not_told", "no_token"
NOT_THIS_ACCOUNTS = "not_this_accounts"


@dataclass(frozen=True)
class Disconnected:
    name: str  # what the merchant calls it: the shop's or the Page's name
    revocation: str | None  # DONE, NOTHING_LEFT or NOT_TOLD; None when the provider was not asked
    message: str  # one sentence for the status page

    @property
    def provider_told(self) -> bool:
        return self.revocation not in (NOT_TOLD, NO_TOKEN, NOT_THIS_ACCOUNTS)


async def _own(store: TokenStore, token_key: str, link_key: str, account: str, what: str) -> TokenRecord | None:
    """The connection's token row (None when only its link is left), after checking it is this account's."""
    record = await store.get_record(token_key)
    if record is not None and record.account_uuid == account:
        return record
    if record is None and await store.account_of(link_key) == account:
        return None
    raise NotFound(f"This account has no {what} like that.")


async def shop_to_disconnect(store: TokenStore, *, domain: str, account: str) -> TokenRecord | None:
    key = shopify.shop_key(domain)
    return await _own(store, keys.shopify_token_key(key), keys.shopify_uuid_key(key), account, "store")


async def page_to_disconnect(store: TokenStore, *, page_id: str, account: str) -> TokenRecord | None:
    return await _own(store, keys.page_token_key(page_id), keys.page_uuid_key(page_id), account, "Page")


async def disconnect_shop(
    store: TokenStore, http: httpx.AsyncClient, settings: Settings, *, domain: str, account: str
) -> Disconnected:
    record = await shop_to_disconnect(store, domain=domain, account=account)
    name = (record.name if record is not None else None) or domain
    revocation: str | None = None
    if record is not None:
        try:
            # A token due for refresh is refreshed first: an expired one could not give anything up.
            token = await store.get_shopify_token(domain)
            if token is not None:
                admin_base = shopify.admin_base_url(settings.shopify_admin_base_url, domain)
                revoked = await shopify.revoke_access(http, admin_base=admin_base, access_token=token)
                revocation = DONE if revoked else NOTHING_LEFT
        except TokenRevoked:
            revocation = NOTHING_LEFT
        except ServiceError:  # no answer, an error answer, no app settings, a value no key opens
            revocation = NOT_TOLD
    await store.forget_shop(shopify.shop_key(domain), with_link=True, event=DISCONNECTED, reason=revocation)
    if revocation == DONE:
        message = f"Disconnected {name}: its access was removed at Shopify, and its token deleted here."
    elif revocation == NOT_TOLD:
        message = (
            f"Disconnected {name} here (its token is deleted), but Shopify did not answer, so the app may "
            f"still be installed there: uninstall it in the store's admin under Settings, Apps."
        )
    elif revocation == NOTHING_LEFT:
        message = f"Disconnected {name}: Shopify no longer accepted its token, so nothing was left to remove there."
    else:
        message = f"Disconnected {name}: its token was gone already (uninstalled), and its link is deleted now."
    return Disconnected(name, revocation, message)


def page_label(record: TokenRecord | None, page_id: str) -> str:
    return (record.name if record is not None else None) or f"Page {page_id}"


async def disconnect_page(
    store: TokenStore, graph: Callable[[], facebook.Graph], *, page_id: str, account: str
) -> Disconnected:
    """`graph` makes the Graph client, only when the grant is to be removed (it needs the app's settings)."""
    record = await page_to_disconnect(store, page_id=page_id, account=account)
    name = page_label(record, page_id)
    await store.delete_tokens([keys.page_token_key(page_id), keys.page_uuid_key(page_id)], event=DISCONNECTED)
    user_id = record.granted_by if record is not None else None
    if user_id is None:
        return Disconnected(name, None, f"Disconnected {name}.")
    left = [
        other
        for other in await store.list_tokens(account_uuid=account)
        if other.key.startswith(keys.PAGE_TOKEN_PREFIX) and other.granted_by == user_id
    ]
    if left:
        return Disconnected(name, None, f"Disconnected {name}. Your other Pages stay connected.")
    revocation = await _remove_grant(store, graph, user_id, account)
    if revocation == NOT_THIS_ACCOUNTS:
        message = (
            f"Disconnected {name}. The Facebook login that connected it belongs to another account, so its access "
            "at Facebook was left as it is."
        )
    elif revocation in (NOT_TOLD, NO_TOKEN):
        why = "Facebook did not answer" if revocation == NOT_TOLD else "no Facebook login token was left to ask with"
        message = (
            f"Disconnected {name} here (its token is deleted), but {why}, so the app may still be listed in your "
            "Facebook settings: remove it under Settings, Business integrations."
        )
    else:
        message = f"Disconnected {name}, your last Page: the app's access was removed at Facebook too."
    return Disconnected(name, revocation, message)


async def _remove_grant(store: TokenStore, graph: Callable[[], facebook.Graph], user_id: str, account: str) -> str:
    """Remove the user's grant at Facebook, then delete the user token here whatever Facebook said; only when
    the user's token is this account's (a login of another account is that account's to remove)."""
    user_key = keys.facebook_user_token_key(user_id)
    owner = await store.get_record(user_key)
    if owner is not None and owner.account_uuid != account:
        return NOT_THIS_ACCOUNTS
    revocation = NOT_TOLD
    try:
        token = await store.get_token(user_key)
        if token is None:
            revocation = NO_TOKEN
        else:
            await graph().revoke_permissions(user_id, token)
            revocation = DONE
    except TokenRevoked:
        revocation = NOTHING_LEFT
    except (ServiceError, ValueError):
        revocation = NOT_TOLD
    finally:
        await store.delete_tokens([user_key], event=DISCONNECTED, reason=revocation)
    return revocation
