"""A webhook receiver on a real local HTTP server, raw reads of the event tables, and the fingerprint as
the contract defines it (HMAC-SHA256 under a key derived from the primary encryption key)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sqlalchemy as sa

from service.vault import TokenStore
from tests.conftest import PRIMARY_KEY

WEBHOOK_SECRET = "whsec-test-0123456789abcdefghijklmnopqrstuvwxyz"


def fingerprint(token: str, primary_key: str = PRIMARY_KEY) -> str:
    key = hmac.new(primary_key.encode(), b"salesbot token fingerprint", hashlib.sha256).digest()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()[:16]


async def raw_events(store: TokenStore) -> list[dict]:
    """Every row of connection_events, every column, as stored."""
    async with store.engine.connect() as connection:
        rows = await connection.execute(sa.text("SELECT * FROM connection_events ORDER BY seq"))
        return [dict(row._mapping) for row in rows]


async def raw_deliveries(store: TokenStore) -> list[dict]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(sa.text("SELECT * FROM event_deliveries ORDER BY seq"))
        return [dict(row._mapping) for row in rows]


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    answered: int

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """What a team's endpoint sees: every request, and the status it answered (`status`, changeable)."""

    url: str
    status: int = 200
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delivered(self) -> list[dict]:
        """The events answered 2xx, in the order they arrived."""
        with self.lock:
            return [r.event for r in self.requests if 200 <= r.answered < 300]

    def refused(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if not 200 <= r.answered < 300]


@contextmanager
def receiver(status: int = 200) -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            endpoint = holder[0]
            with endpoint.lock:
                answered = endpoint.status
                endpoint.requests.append(Received(body, dict(self.headers.items()), answered))
            self.send_response(answered)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks/salesbot", status))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Hanging:
    """A receiver that takes each request and never answers (until it is closed)."""

    url: str
    received: threading.Event = field(default_factory=threading.Event)


@contextmanager
def hanging_receiver() -> Iterator[Hanging]:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    endpoint = Hanging(f"http://127.0.0.1:{listener.getsockname()[1]}/hooks")
    held: list[socket.socket] = []
    stop = threading.Event()

    listener.settimeout(0.05)  # so that the loop sees `stop`: closing a socket does not wake accept()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)  # the request sits unread in the socket's buffer
            endpoint.received.set()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        stop.set()
        listener.close()
        for connection in held:
            connection.close()
        thread.join(timeout=5)
