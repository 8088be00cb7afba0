"""A process that dies in the middle of a Shopify refresh: it takes the row's lease, sends the refresh,
and hangs there (Shopify never answers) until test_lease.py kills it with SIGKILL.

    python -m tests.bot.refresh_child SHOP        (settings from the environment)
"""

from __future__ import annotations

import asyncio
import sys

import httpx

from service.settings import Settings
from service.vault import TokenStore


async def never_answers(request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(3600)
    return httpx.Response(500)


async def main(shop: str) -> None:
    settings = Settings.from_environ(env_file=None)
    async with TokenStore.open(settings, transport=httpx.MockTransport(never_answers)) as store:
        await store.get_shopify_token(shop)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
