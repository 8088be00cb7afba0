"""Shared by the provider tests."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

import httpx


def assert_hidden(exc: BaseException, *secrets: str) -> None:
    # A logged traceback shows every chained exception too: an httpx one would carry its own message.
    shown = [str(exc), getattr(exc, "message", "")]
    link: BaseException | None = exc
    while link is not None:
        shown.append(repr(link))
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    for secret in secrets:
        assert all(secret not in text for text in shown)


# A provider stand-in for unit tests: an httpx.MockTransport that records what it was sent and answers
# with a function of the request.
Respond = Callable[[httpx.Request], httpx.Response]


class Fake:
    """Records what it was sent and answers with `respond`."""

    def __init__(self, respond: Respond) -> None:
        self.requests: list[httpx.Request] = []
        self._respond = respond

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._respond(request)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))

    def form(self, index: int = -1) -> dict[str, str]:
        request = self.requests[index]
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        pairs = parse_qsl(request.content.decode(), keep_blank_values=True)
        assert len(pairs) == len(dict(pairs))
        return dict(pairs)


def answer(status: int, body: object) -> Respond:
    return lambda request: httpx.Response(status, json=body)
