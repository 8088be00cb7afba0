"""salesbot: Shopify and Facebook OAuth, and the encrypted token vault a Messenger sales bot reads."""

from service.settings import Settings
from service.store import TokenRecord, TokenStore, TokenWrite

__all__ = ["Settings", "TokenRecord", "TokenStore", "TokenWrite"]
