from __future__ import annotations

from service.settings import Settings
from tests.web import connect_facebook, connect_shopify, running_app, status_json


async def test_shopify_then_facebook(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        done = await connect_shopify(web.browser)
        assert done.status_code == 200, done.text
        first = await status_json(web.browser)
        done = await connect_facebook(web.browser)
        assert done.status_code == 200, done.text
        second = await status_json(web.browser)
        print(first, second)
        assert first["account"] == second["account"]
