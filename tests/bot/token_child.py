"""Another process asking for a shop's token, as a bot would; prints one JSON line of what it got.

    python -m tests.bot.token_child SHOP        (settings from the environment)

Never the token: its SHA-256, so the test can compare it with what the stand-in issued.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys

from service.errors import ServiceError
from service.settings import Settings
from service.vault import TokenStore


async def main(shop: str) -> None:
    settings = Settings.from_environ(env_file=None)
    async with TokenStore.open(settings) as store:
        try:
            token = await store.get_shopify_token(shop)
        except ServiceError as error:
            found = {"error": error.code, "retry_after": getattr(error, "retry_after", None)}
            print(json.dumps({**found, "reason": getattr(error, "reason", None)}), flush=True)
            return
    print(json.dumps({"sha256": hashlib.sha256((token or "").encode()).hexdigest()}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
