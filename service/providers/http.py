"""What both providers' HTTP calls share: one request with its failures mapped, lenient JSON, UTC times."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from service import errors, metrics


def aware_utc(now: datetime) -> datetime:
    if now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


def shown(value: object, limit: int = 40) -> str:
    """A provider's value quoted in a message: repr (control characters escaped), cut to `limit` characters."""
    text = str(value)
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def numeric_id(value: object, *, limit: int = 64) -> bool:
    """Whether a provider's id is what Facebook ids are: ASCII digits (never a path, never a dot)."""
    return isinstance(value, str) and 0 < len(value) <= limit and value.isascii() and value.isdigit()


def parse_json(content: bytes) -> Any:
    """The decoded body, or None when it is not JSON (truncated, HTML error pages, nesting bombs)."""
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return None


async def send(
    client: httpx.AsyncClient, provider: str, method: str, url: str, *, what: str, **kwargs: Any
) -> httpx.Response:
    # Query strings and bodies here hold secrets and codes: no message below quotes the request, and
    # `from None` keeps the httpx exception (which holds it) out of tracebacks.
    try:
        with metrics.provider_call(provider.lower()) as outcome:
            response = await client.request(method, url, **kwargs)
            outcome.append(str(response.status_code))
        return response
    except httpx.TimeoutException as exc:
        raise errors.ProviderUnavailable(
            f"{provider} did not answer the {what} in time ({type(exc).__name__})"
        ) from None
    except httpx.TransportError as exc:
        raise errors.ProviderUnavailable(f"could not reach {provider} for the {what} ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise errors.ProviderError(f"{provider}'s answer to the {what} was unreadable ({type(exc).__name__})") from None
