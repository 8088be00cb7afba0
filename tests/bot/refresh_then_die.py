"""A process that dies after Shopify answered its refresh and before the new pair was stored.

Its transport sends the refresh to the stand-in over loopback and reads Shopify's whole answer, then
says "answered STATUS" on stdout and never hands the answer on: the store waits there, the new pair
unwritten, until test_refresh_recovery.py kills the process with SIGKILL.

    python -m tests.bot.refresh_then_die SHOP        (settings from the environment)
"""

from __future__ import annotations

import asyncio
import sys

import httpx

from service.settings import Settings
from service.vault import TokenStore


class AnswerThenHang(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if request.url.path.endswith("/admin/oauth/access_token"):
            print("answered", response.status_code, flush=True)
            await asyncio.sleep(3600)  # killed here, between Shopify's answer and our write
        return response


async def main(shop: str) -> None:
    settings = Settings.from_environ(env_file=None)
    async with TokenStore.open(settings, transport=AnswerThenHang()) as store:
        await store.get_shopify_token(shop)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
