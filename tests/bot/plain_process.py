"""A bot's script, as a bot author writes it: a plain process beside the service, settings from the
environment alone, every method of the bot's side once. Prints what it got as JSON, tokens as digests.

    python -m tests.bot.plain_process SHOP PAGE_ID PSID
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys

from service import TokenStore


def digest(token: str | None) -> str | None:
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()


async def main(shop: str, page_id: str, psid: str) -> None:
    async with TokenStore.open(os.environ["DATABASE_URL"]) as store:  # keys and providers from the environment
        page = await store.page_connection(page_id)
        connection = await store.shop_connection(shop)
        token = await store.get_shopify_token(shop)
        async with store.shopify_client(shop) as client:
            products = await client.post(
                "graphql.json", json={"query": "{ products(first: 2) { edges { node { title } } } }"}
            )
        async with store.graph_client(page_id) as client:
            sent = await client.post(
                "me/messages", json={"recipient": {"id": psid}, "message": {"text": "Hello from a plain process"}}
            )
    assert page is not None and connection is not None
    print(
        json.dumps(
            {
                "page": {"shop": page.shop, "account": page.account, "token": digest(page.token)},
                "shop": {"shop": connection.shop, "account": connection.account, "pages": list(connection.page_ids)},
                "shop_token": digest(connection.token),
                "get_shopify_token": digest(token),
                "products": [edge["node"]["title"] for edge in products.json()["data"]["products"]["edges"]],
                "sent": sent.status_code,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
