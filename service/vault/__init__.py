"""The token vault: the only code that reads or writes `tokens` and `accounts` (DESIGN.md, "The vault")."""

from service.vault.connections import PageConnection, ShopConnection
from service.vault.schema import TokenRecord, TokenWrite
from service.vault.store import TokenStore

__all__ = ["PageConnection", "ShopConnection", "TokenRecord", "TokenStore", "TokenWrite"]
