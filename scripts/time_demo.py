"""Time complete Facebook + Shopify connections through `salesbot demo` under uvicorn on loopback.

    .venv/bin/python scripts/time_demo.py [--runs 20]

Each run is a new browser (its own cookies): Facebook login → consent → callback → code, long-lived
token, /me, /me/accounts → the choice of Pages (all three ticked) → /me/accounts again → stored, then
Shopify login → consent → callback → token exchange, shop.json (its name) → stored, then the status
page, checked to show one account with the store and three Pages. The demo's stand-in has one Facebook
user, so Facebook goes first: from the second run on it is a returning merchant, whose new browser
enters their account (the other order would be refused: the store's new account is not the user's).
The figure is the median (and p90) wall time of one such run, HTTP client and server on this machine,
and the CPU time the server process spent per run (Linux /proc), which other work on a shared machine
moves much less than wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.demo_server import salesbot_server  # noqa: E402
from tests.web import form_of  # noqa: E402


def connect_both(base_url: str, shop: str) -> float:
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, follow_redirects=True, timeout=10) as browser:
        consent = browser.get("/facebook/login")
        action, fields = form_of(consent, "allow")
        choice = browser.post(action, data=fields)
        choice.raise_for_status()
        action, fields = form_of(choice, "connect-pages")  # the app asks which Pages: all three
        browser.post(action, data={**fields, "action": "connect", "page": ["101", "102", "103"]}).raise_for_status()
        consent = browser.get(f"/shopify/{shop}/login")
        action, fields = form_of(consent, "allow")
        browser.post(action, data=fields).raise_for_status()
        view = browser.get("/", headers={"accept": "application/json"}).json()
    elapsed = time.perf_counter() - started
    assert view["missing"] == [] and len(view["pages"]) == 3 and shop in str(view["shops"]), view
    return elapsed


def server_cpu(port: int) -> float:
    """CPU seconds (user + system) the demo server listening on `port` has used so far."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if b"demo" in args and str(port).encode() in args:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    raise RuntimeError(f"no demo server process on port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with salesbot_server("demo") as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        connect_both(base_url, "warm-up")  # first-request costs (imports, connections) are not a merchant's
        cpu_before = server_cpu(port)
        times = sorted(connect_both(base_url, f"shop-{n}") for n in range(args.runs))
        cpu = (server_cpu(port) - cpu_before) / args.runs
    p90 = times[int(0.9 * (len(times) - 1))]
    print(
        f"runs={args.runs}: one Facebook + Shopify connection, median {statistics.median(times) * 1000:.1f} ms, "
        f"p90 {p90 * 1000:.1f} ms, min {times[0] * 1000:.1f} ms; server CPU {cpu * 1000:.1f} ms per connection"
    )


if __name__ == "__main__":
    main()
