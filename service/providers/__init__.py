"""Pure provider logic (Shopify, Facebook): URLs, signatures, token endpoints. No Starlette, no SQL."""
