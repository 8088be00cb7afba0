"""Large bodies are refused before they are read: `salesbot serve` under uvicorn, a raw socket client,
and the server process's peak resident memory (VmHWM) before and after.

The webhook and signed_request endpoints used to read a body whole and check its size afterwards, so
a 400 MiB POST took the process from 84 to 856 MiB. Now a declared Content-Length past the limit is
refused before any byte is read, and a chunked body as soon as the running total passes it.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.settings import Settings
from tests.conftest import base_environ
from tests.web import provider_environ

ONLY_BACKENDS = ["sqlite"]  # the refusal happens before any query
ROOT = Path(__file__).resolve().parents[2]
ENDPOINTS = ("/shopify/webhooks", "/facebook/deauthorize", "/facebook/data-deletion")
LARGE = 128 << 20  # far past every limit (1 MiB for webhooks, 16 KiB for signed requests)
CHUNK = 64 << 10
PEAK_GROWTH_LIMIT = 32 << 20
WAIT = 60.0  # a loaded 2-core machine; only ever an upper bound


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def peak_rss(pid: int) -> int:
    """The process's high-water mark of resident memory, in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture
def server(migrated: Settings, tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    port = free_port()
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STATE_TOKEN", "TOKEN_", "DATABASE"))},
        **base_environ(DATABASE_URL=migrated.database_url),
        **provider_environ(),
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "service", "serve", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=tmp_path, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "salesbot serve did not answer /healthz"
            time.sleep(0.05)
        yield "127.0.0.1", port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


def read_status(connection: socket.socket) -> int:
    connection.settimeout(WAIT)
    head = b""
    while b"\r\n" not in head:
        data = connection.recv(4096)
        assert data, "the server closed the connection without answering"
        head += data
    return int(head.split(b" ", 2)[1])


def post_declared(host: str, port: int, path: str, length: int) -> int:
    """Declare a huge Content-Length, send no body at all, and wait for the answer."""
    with socket.create_connection((host, port), timeout=WAIT) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        return read_status(connection)


def post_streamed(host: str, port: int, path: str, total: int) -> tuple[int, int]:
    """Stream a chunked body (no length declared) until the server answers; return (status, bytes sent)."""
    chunk = f"{CHUNK:x}\r\n".encode() + b"A" * CHUNK + b"\r\n"
    sent = 0
    with socket.create_connection((host, port), timeout=WAIT) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        while sent < total:
            readable, _, _ = select.select([connection], [], [], 0)
            if readable:
                break  # the server has answered: stop sending, as a client would
            connection.sendall(chunk)
            sent += CHUNK
        else:
            connection.sendall(b"0\r\n\r\n")
        return read_status(connection), sent


def test_large_bodies_are_refused_with_413_and_the_process_stays_small(server: tuple[str, int, int]) -> None:
    host, port, pid = server
    for path in ENDPOINTS:  # warm up: every code path the refusals take, imported and run once
        assert post_streamed(host, port, path, 2 << 20)[0] == 413
    before = peak_rss(pid)
    for path in ENDPOINTS:
        assert post_declared(host, port, path, 400 << 20) == 413, path
        status, sent = post_streamed(host, port, path, LARGE)
        assert status == 413, path
        assert sent < LARGE, f"{path} read the whole {LARGE >> 20} MiB before answering"
    growth = peak_rss(pid) - before
    assert growth < PEAK_GROWTH_LIMIT, f"peak RSS grew by {growth / (1 << 20):.1f} MiB"
