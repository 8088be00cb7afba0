"""Start `salesbot demo` (or `salesbot serve`) as a real uvicorn on loopback for a test, and stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(base_url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before it answered")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{base_url}/healthz did not answer within {timeout} s")


@contextmanager
def salesbot_server(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    port: int | None = None,
    log: Path | None = None,
    log_level: str = "warning",
) -> Iterator[str]:
    """Run `python -m service <args> --port <free>`; yield its base URL; terminate it afterwards.
    Its output goes to `log` when given (read it after the block), else to a temporary file."""
    port = port or free_port()
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with open(log, "w+b") if log is not None else tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                *args,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                log_level,
            ],
            env=environ,
            cwd=cwd or ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_healthy(base_url, process)
            except (RuntimeError, TimeoutError) as failure:
                output.seek(0)
                raise RuntimeError(
                    f"{failure}; it printed:\n{output.read().decode(errors='replace')[-2000:]}"
                ) from None
            yield base_url
        finally:
            stop(process)


def stop(process: subprocess.Popen) -> None:
    """Terminate politely, then kill if it does not go within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
