"""Names beside the tokens (revision 0007): written by the planner like any metadata, kept by writes that do
not name them, carried by listings with whether a refresh token is stored, never the token itself."""

from __future__ import annotations

from datetime import timedelta

from service.models import utcnow
from service.vault import TokenStore, TokenWrite

PAGE = "FACEBOOK_ACCESS_TOKEN_101"
SHOP = "SHOPIFY_ACCESS_TOKEN_acme"


async def test_names_are_stored_listed_and_kept_by_writes_that_do_not_name_them(store: TokenStore) -> None:
    later = utcnow() + timedelta(hours=1)
    await store.store_tokens(
        [
            TokenWrite(PAGE, "EAAP-page", "token", {"name": "Acme Shoes", "category": "Retail", "tasks": "MESSAGING"}),
            TokenWrite(SHOP, "shpat-1", "token", {"name": "Acme", "refresh_token": "shprt-1", "expires_at": later}),
        ]
    )
    await store.store_token(SHOP, "shpat-2", refresh_token="shprt-2", expires_at=later)  # a refresh: no name
    listed = {record.key: record for record in await store.list_tokens()}
    assert (listed[PAGE].name, listed[PAGE].category, listed[PAGE].tasks) == ("Acme Shoes", "Retail", "MESSAGING")
    assert listed[SHOP].name == "Acme"
    assert (listed[PAGE].refreshable, listed[SHOP].refreshable) == (False, True)
    assert listed[SHOP].refresh_token is None and listed[SHOP].value is None  # a listing decrypts nothing
    record = await store.get_record(SHOP)
    assert record is not None and record.refreshable and record.refresh_token == "shprt-2" and record.name == "Acme"
    await store.set_metadata(PAGE, name=None)
    assert (await store.get_record(PAGE)).name is None  # type: ignore[union-attr]
