"""Shared by the provider tests."""

from __future__ import annotations


def assert_hidden(exc: BaseException, *secrets: str) -> None:
    # A logged traceback shows every chained exception too: an httpx one would carry its own message.
    shown = [str(exc), getattr(exc, "message", "")]
    link: BaseException | None = exc
    while link is not None:
        shown.append(repr(link))
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    for secret in secrets:
        assert all(secret not in text for text in shown)
