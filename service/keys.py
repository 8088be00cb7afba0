"""The seed's key vocabulary, in one place.

Keys name what a row holds: `SHOPIFY_ACCESS_TOKEN_{shop_key}` beside `USER_UUID_{shop_key}` (the
shop's account), `FACEBOOK_ACCESS_TOKEN_{page_id}` beside `PAGE_UUID_{page_id}`. The seed kept one
global `FACEBOOK_USER_ACCESS_TOKEN`, which a second merchant would overwrite; ours carries the
Facebook user id: `FACEBOOK_USER_ACCESS_TOKEN_{user_id}`.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass

SHOPIFY = "shopify"
FACEBOOK = "facebook"

SHOPIFY_TOKEN_PREFIX = "SHOPIFY_ACCESS_TOKEN_"
SHOPIFY_UUID_PREFIX = "USER_UUID_"
PAGE_TOKEN_PREFIX = "FACEBOOK_ACCESS_TOKEN_"
PAGE_UUID_PREFIX = "PAGE_UUID_"
FACEBOOK_USER_TOKEN_PREFIX = "FACEBOOK_USER_ACCESS_TOKEN_"
SEED_FACEBOOK_USER_TOKEN = "FACEBOOK_USER_ACCESS_TOKEN"


def shopify_token_key(shop_key: str) -> str:
    return SHOPIFY_TOKEN_PREFIX + shop_key


def shopify_uuid_key(shop_key: str) -> str:
    return SHOPIFY_UUID_PREFIX + shop_key


def page_token_key(page_id: str) -> str:
    return PAGE_TOKEN_PREFIX + page_id


def page_uuid_key(page_id: str) -> str:
    return PAGE_UUID_PREFIX + page_id


def facebook_user_token_key(user_id: str) -> str:
    return FACEBOOK_USER_TOKEN_PREFIX + user_id


@dataclass(frozen=True)
class KeyInfo:
    provider: str
    subject: str  # shop_key, Page id or Facebook user id
    is_uuid: bool  # a *_UUID_* entry, whose value is an account UUID
    token_key: str  # the token row this key belongs with (itself, for a token)
    uuid_key: str | None  # the UUID entry that names the account (None for Facebook user tokens)


@functools.lru_cache(maxsize=4096)  # every write asks twice (its plan, its event): the bot's shops repeat
def describe_key(key: str) -> KeyInfo | None:
    """What a key in the seed's vocabulary is about, or None for a key outside it."""
    if key.startswith(FACEBOOK_USER_TOKEN_PREFIX) and len(key) > len(FACEBOOK_USER_TOKEN_PREFIX):
        return KeyInfo(FACEBOOK, key[len(FACEBOOK_USER_TOKEN_PREFIX) :], False, key, None)
    for prefix, provider, is_uuid, token_of, uuid_of in (
        (SHOPIFY_TOKEN_PREFIX, SHOPIFY, False, shopify_token_key, shopify_uuid_key),
        (SHOPIFY_UUID_PREFIX, SHOPIFY, True, shopify_token_key, shopify_uuid_key),
        (PAGE_TOKEN_PREFIX, FACEBOOK, False, page_token_key, page_uuid_key),
        (PAGE_UUID_PREFIX, FACEBOOK, True, page_token_key, page_uuid_key),
    ):
        if key.startswith(prefix) and len(key) > len(prefix):
            subject = key[len(prefix) :]
            return KeyInfo(provider, subject, is_uuid, token_of(subject), uuid_of(subject))
    return None


def as_uuid(value: str) -> str | None:
    """A `*_UUID_*` entry's value as the canonical lower-case UUID, or None when it is not one."""
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None
