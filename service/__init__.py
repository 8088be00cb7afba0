"""salesbot: Shopify and Facebook OAuth, and the encrypted token vault a Messenger sales bot reads.

The public names are imported on first use, so `salesbot --help` and `salesbot keys generate` load
no database code (DESIGN.md, "The command line").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.settings import Settings
    from service.vault import PageConnection, ShopConnection, TokenRecord, TokenStore, TokenWrite

__all__ = ["PageConnection", "Settings", "ShopConnection", "TokenRecord", "TokenStore", "TokenWrite"]
_HOMES = {
    "PageConnection": "service.vault",
    "ShopConnection": "service.vault",
    "Settings": "service.settings",
    "TokenRecord": "service.vault",
    "TokenStore": "service.vault",
    "TokenWrite": "service.vault",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'service' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value
