"""page_connection and shop_connection: everything the bot needs for a Page or a shop, from one indexed
query that decrypts only the token it returns, cached, and dropped when a row it depends on changes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta

import asyncpg
import pytest
from cryptography.fernet import Fernet

from service.db import sqlite_file
from service.errors import InvalidInput, InvalidShop, UndecryptableValue
from service.models import utcnow
from service.settings import Settings
from service.vault import PageConnection, ShopConnection, TokenStore, TokenWrite, sql
from service.vault.postgres import asyncpg_dsn
from tests.bot.helpers import PAGES, SHOP, SHOP_KEY, bot_store, connect_merchant, refresh_calls, seen
from tests.conftest import make_settings
from tests.web import running_app


async def test_a_page_connection_carries_the_page_token_its_account_and_its_store(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        account = await connect_merchant(web)
        async with bot_store(web) as store:
            page = await store.page_connection("102")
            assert isinstance(page, PageConnection)
            # The name is the one the stand-in's /me/accounts gave at connect time (its demo Pages).
            assert (page.page_id, page.name, page.account, page.shop) == ("102", "Acme Outlet", account, SHOP)
            assert page.token == await web.store.get_token("FACEBOOK_ACCESS_TOKEN_102")
            assert page.token in web.sandbox.valid_facebook_tokens()
            assert page.expires_at is None  # from a long-lived user token: no expiry by time
            assert "EAA" not in repr(page)
            assert await store.page_connection("999") is None


async def test_a_shop_connection_accepts_the_name_or_the_domain(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        account = await connect_merchant(web)
        record = await web.store.get_record(SHOP_KEY)
        assert record is not None
        async with bot_store(web) as store:
            by_name = await store.shop_connection("acme-7cu19ngr")
            by_domain = await store.shop_connection(SHOP)
            assert isinstance(by_name, ShopConnection) and by_name == by_domain
            assert (by_name.shop, by_name.account, by_name.page_ids) == (SHOP, account, PAGES)
            assert (by_name.token, by_name.expires_at) == (record.value, record.expires_at)
            assert "shpat_" not in repr(by_name)
            assert await store.shop_connection("unknown-shop") is None
            assert refresh_calls(web) == 0


async def test_bad_names_are_refused_before_anything_is_read(migrated: Settings) -> None:
    async with TokenStore.open(migrated) as store:
        with pytest.raises(InvalidShop):
            await store.shop_connection("acme.example.com/admin")
        for page_id in ("", "12a", "1 2", "1" * 65):
            with pytest.raises(InvalidInput):
                await store.page_connection(page_id)
        assert store.stats["queries"] == 0


async def test_a_shop_token_due_for_refresh_is_refreshed_by_shop_connection(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        old = await web.store.get_record(SHOP_KEY)
        assert old is not None
        # Due within the refresh margin, and already refused by Shopify: only a refreshed token works.
        await web.store.set_metadata(SHOP_KEY, expires_at=utcnow() + timedelta(minutes=2))
        web.sandbox.expire_shopify_access(SHOP)
        async with bot_store(web) as store:
            shop = await store.shop_connection("acme-7cu19ngr")
            assert shop is not None
            assert refresh_calls(web) == 1
            assert shop.token != old.value and shop.token in web.sandbox.valid_shopify_tokens(SHOP)
            assert shop.expires_at is not None and shop.expires_at > utcnow() + timedelta(minutes=50)
            assert (await store.shop_connection(SHOP)) == shop
            assert refresh_calls(web) == 1  # fresh now: the next call does not refresh again
        assert (await web.store.get_record(SHOP_KEY)).value == shop.token  # type: ignore[union-attr]


async def test_connections_are_cached_and_follow_changes_from_another_process(migrated: Settings, backend: str) -> None:
    async with running_app(migrated.database_url) as web:
        account = await connect_merchant(web)
        async with bot_store(web) as store:
            page = await store.page_connection("101")
            shop = await store.shop_connection(SHOP)
            queries = store.stats["queries"]

            async def shop_of(page_id: str) -> str | None:
                found = await store.page_connection(page_id)
                return None if found is None else found.shop

            async def token_of(page_id: str) -> str | None:
                found = await store.page_connection(page_id)
                return None if found is None else found.token

            for _ in range(3):
                assert await store.page_connection("101") == page
                assert await store.shop_connection(SHOP) == shop
            assert store.stats["queries"] == queries  # answered from the cache

            # The app (another store: for this one, another process) deletes the shop's token.
            await web.store.delete_token(SHOP_KEY)
            await seen(lambda: shop_of("101"), None, backend)
            assert await store.shop_connection(SHOP) is None

            # A Page's token rewritten elsewhere: the shop's list and the Page's token follow.
            await web.store.delete_token("FACEBOOK_ACCESS_TOKEN_103")
            await web.store.store_token("FACEBOOK_ACCESS_TOKEN_101", "EAAPnew-token-value")
            await seen(lambda: token_of("101"), "EAAPnew-token-value", backend)
            assert await store.page_connection("103") is None

            # A new store joins the account: the Pages now sell from it.
            await web.store.store_token("SHOPIFY_ACCESS_TOKEN_second-shop", "shpat_second", account_uuid=account)
            await seen(lambda: shop_of("101"), "second-shop.myshopify.com", backend)
            second = await store.shop_connection("second-shop")
            assert second is not None and second.page_ids == ("101", "102")


async def test_a_relink_from_another_process_reaches_the_cached_connection(migrated: Settings, backend: str) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        async with bot_store(web) as store:
            assert (await store.page_connection("102")).shop == SHOP  # type: ignore[union-attr]
            other = await web.store.create_account()
            # Only account_uuid changes (as `link_to_account` does): the change log must still name the key.
            assert await web.store.link_to_account("FACEBOOK_ACCESS_TOKEN_102", other)

            async def link() -> tuple[str | None, str | None] | None:
                found = await store.page_connection("102")
                return None if found is None else (found.account, found.shop)

            await seen(link, (other, None), backend)


async def test_a_rename_from_another_process_reaches_the_cached_connection(migrated: Settings, backend: str) -> None:
    async with running_app(migrated.database_url) as web:
        await connect_merchant(web)
        async with bot_store(web) as store:
            assert (await store.page_connection("101")).name == "Acme Shoes"  # type: ignore[union-attr]
            # Only the name changes, the token stays: other processes must still hear of it.
            assert await web.store.set_metadata("FACEBOOK_ACCESS_TOKEN_101", name="Acme Shoes & Boots")

            async def name() -> str | None:
                found = await store.page_connection("101")
                return None if found is None else found.name

            await seen(name, "Acme Shoes & Boots", backend)


async def test_with_several_stores_a_page_sells_from_the_first_connected(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        account = await connect_merchant(web)
        # Connected later, though its name sorts first.
        await web.store.store_token("SHOPIFY_ACCESS_TOKEN_aaa-later", "shpat_later", account_uuid=account)
        async with bot_store(web) as store:
            assert (await store.page_connection("101")).shop == SHOP  # type: ignore[union-attr]


async def test_only_the_token_returned_is_decrypted(migrated: Settings) -> None:
    account = "3f0e8a52-6a8e-4d2b-9d55-0b7c35f1d0a1"
    # Everything else the account owns is written under a key this store's ring does not hold: reading
    # any of it would raise UndecryptableValue.
    foreign = make_settings(migrated.database_url, TOKEN_ENCRYPTION_KEYS=Fernet.generate_key().decode())
    async with TokenStore.open(foreign) as other:
        await other.store_tokens(
            [
                TokenWrite("PAGE_UUID_101", account, "uuid"),
                TokenWrite("USER_UUID_acme", account, "uuid"),
                *(TokenWrite(f"FACEBOOK_ACCESS_TOKEN_{page}", f"EAAP-{page}") for page in ("102", "103")),
                *(TokenWrite(f"PAGE_UUID_{page}", account, "uuid") for page in ("102", "103")),
                TokenWrite("FACEBOOK_USER_ACCESS_TOKEN_9001", "EAA-user", metadata={"account_uuid": account}),
            ]
        )
    async with TokenStore.open(migrated) as store:
        await store.store_tokens(
            [
                TokenWrite("FACEBOOK_ACCESS_TOKEN_101", "EAAP-101"),  # joins its entry's account
                TokenWrite("SHOPIFY_ACCESS_TOKEN_acme", "shpat_acme"),
            ]
        )
        with pytest.raises(UndecryptableValue):
            await store.account_tokens(account)  # the control: the rest really is unreadable here
        page = await store.page_connection("101")
        assert page is not None and (page.token, page.account, page.shop) == ("EAAP-101", account, "acme.myshopify.com")
        shop = await store.shop_connection("acme")
        assert shop is not None and (shop.token, shop.page_ids) == ("shpat_acme", ("101", "102", "103"))


# --- the queries use indexes ---------------------------------------------------------------------

PAGE_PARAMS = {"key": "FACEBOOK_ACCESS_TOKEN_101", "uuid_key": "PAGE_UUID_101"}
SHOP_PARAMS = {"key": "SHOPIFY_ACCESS_TOKEN_shop-7", "uuid_key": "USER_UUID_shop-7"}


async def fill(store: TokenStore, accounts: int = 1500) -> None:
    """Enough rows in enough accounts that a planner with statistics would rather scan than use a bad index."""
    writes = []
    for n in range(accounts):
        account = f"00000000-0000-4000-8000-{n:012d}"
        writes += [
            TokenWrite(f"USER_UUID_shop-{n}", account, "uuid"),
            TokenWrite(f"SHOPIFY_ACCESS_TOKEN_shop-{n}", f"shpat_{n}"),
            TokenWrite(f"PAGE_UUID_{100 + n}", account, "uuid"),
            TokenWrite(f"FACEBOOK_ACCESS_TOKEN_{100 + n}", f"EAAP{n}"),
        ]
    await store.store_tokens(writes)


async def test_the_connection_queries_use_indexes(migrated: Settings, backend: str) -> None:
    async with TokenStore.open(migrated) as store:
        await fill(store)
    if backend == "sqlite":
        sqlite_plans_use_indexes(migrated)
    else:
        await postgres_plans_use_indexes(migrated)


def sqlite_plans_use_indexes(migrated: Settings) -> None:
    path = sqlite_file(migrated.database_url)
    connection = sqlite3.connect(path)
    try:
        connection.execute("ANALYZE")
        for statement, params, tables in (
            (sql.PAGE_CONNECTION, PAGE_PARAMS, ("tokens", "shop", "link")),
            (sql.SHOP_CONNECTION, SHOP_PARAMS, ("tokens", "page", "link")),
        ):
            prepared = sql.for_dialect(statement, sql.SQLITE)
            plan = [
                row[3]
                for row in connection.execute(
                    f"EXPLAIN QUERY PLAN {prepared.text}", sql.bind(prepared, params, sql.SQLITE)
                )
            ]
            reads = [step for step in plan if step.split(" ")[0] in ("SCAN", "SEARCH") and step.split(" ")[1] in tables]
            # An AUTOMATIC index is one SQLite builds for this query alone, by reading the whole table.
            assert reads and all(
                step.startswith("SEARCH") and " INDEX " in step and "AUTOMATIC" not in step for step in reads
            ), plan
            assert any("(key=?)" in step for step in reads) and any("(account_uuid=?)" in step for step in reads), plan
    finally:
        connection.close()


async def postgres_plans_use_indexes(migrated: Settings) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(migrated.database_url))
    try:
        await connection.execute("ANALYZE tokens")
        for statement, params in ((sql.PAGE_CONNECTION, PAGE_PARAMS), (sql.SHOP_CONNECTION, SHOP_PARAMS)):
            prepared = sql.for_dialect(statement, sql.POSTGRES)
            text = await connection.fetchval(
                f"EXPLAIN (FORMAT JSON) {prepared.text}", *sql.bind(prepared, params, sql.POSTGRES)
            )
            nodes = list(plan_nodes(json.loads(text)[0]["Plan"]))
            on_tokens = [node for node in nodes if node.get("Relation Name") == "tokens"]
            assert on_tokens and all("Index" in node["Node Type"] for node in on_tokens), nodes
            indexes = {node.get("Index Name") for node in on_tokens}
            assert {"pk_tokens", "ix_tokens_account_uuid"} <= indexes, indexes
    finally:
        await connection.close()


def plan_nodes(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)
