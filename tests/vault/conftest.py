from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.settings import Settings
from service.vault import TokenStore


@pytest.fixture
async def vault(migrated: Settings) -> AsyncIterator[TokenStore]:
    async with TokenStore.open(migrated) as opened:
        yield opened
