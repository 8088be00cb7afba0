"""Shutdown is bounded: on SIGTERM, requests in flight get --graceful-timeout seconds (default 20) to
finish, then are cut, however long the provider they wait on takes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.command import ROOT, clean_environ, salesbot
from tests.demo_server import free_port, stop, wait_healthy
from tests.serving import sandbox_over_http, serve_environ
from tests.web import form_of

STUCK_FOR = 60.0  # how long the stand-in holds the token exchange: far past the graceful timeout


def test_sigterm_cuts_a_request_still_waiting_after_the_graceful_timeout(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    with sandbox_over_http() as (sandbox, sandbox_url):
        environ = serve_environ(database_url, sandbox_url, port, HTTP_TIMEOUT_SECONDS=str(STUCK_FOR * 2))
        assert salesbot("migrate", cwd=tmp_path, environ=environ).returncode == 0
        command = [sys.executable, "-m", "service", "serve", "--port", str(port), "--graceful-timeout", "1"]
        serve = subprocess.Popen(
            command, cwd=tmp_path, env=clean_environ(**environ, PYTHONPATH=str(ROOT)), stderr=subprocess.DEVNULL
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, serve)
            with httpx.Client(base_url=base, timeout=STUCK_FOR * 2) as browser:
                consent = browser.get("/shopify/slow-shop/login", follow_redirects=True)
                action, fields = form_of(consent, "allow")
                callback = browser.post(action, data=fields).headers["location"]
                sandbox.faults.add("shopify.access_token", "slow", seconds=STUCK_FOR)
                answered: list[object] = []
                waiting = threading.Thread(target=lambda: answered.append(_get(browser, callback)), daemon=True)
                waiting.start()
                deadline = time.monotonic() + 30
                while not any(r.path.endswith("/oauth/access_token") for r in sandbox.requests):
                    assert time.monotonic() < deadline, "the callback never reached the token exchange"
                    time.sleep(0.02)
                began = time.monotonic()
                os.kill(serve.pid, 15)
                serve.wait(timeout=STUCK_FOR / 2)  # not the minute the stand-in would take
                took = time.monotonic() - began
                waiting.join(timeout=10)
        finally:
            stop(serve)
    assert serve.returncode == 0 and took < STUCK_FOR / 4, took
    assert answered and not (isinstance(answered[0], httpx.Response) and answered[0].status_code == 303)


def _get(browser: httpx.Client, url: str) -> object:
    try:
        return browser.get(url)
    except httpx.HTTPError as error:  # the connection cut at the deadline
        return error


def test_the_graceful_timeout_defaults_to_20_seconds(tmp_path: Path) -> None:
    shown = salesbot("serve", "--help", cwd=tmp_path).stdout
    assert "--graceful-timeout SECONDS" in shown and "(default: 20.0)" in " ".join(shown.split())
