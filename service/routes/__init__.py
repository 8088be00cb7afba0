"""Starlette endpoints: each parses a request, calls providers and the store, and responds."""
