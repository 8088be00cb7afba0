"""`salesbot serve --workers N`: background work runs in one worker at a time across every worker and
instance, and a change made by one worker is what the next request sees, whichever worker answers it.

Real `serve` processes under uvicorn's process manager, SQLite and PostgreSQL; who did what is read from
their JSON logs (each line carries its worker's pid).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from tests.serving import Served, connect_shop, sandbox_over_http, serving
from tests.web import csrf_of, status_json

BACKGROUND = ("housekeeping", "sweep", "connection-count")  # every named leadership the app's lifespan starts


def leadership_lines(served: list[Served]) -> list[dict]:
    return [line for s in served for line in s.lines() if str(line.get("event", "")).startswith("leadership.")]


def wait_until(condition, timeout: float = 60.0, step: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(step)


def test_background_work_leads_in_one_worker_of_all_instances(database_url: str, tmp_path: Path) -> None:
    with sandbox_over_http() as sandbox:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with (
            serving(database_url, tmp_path / "a", "--workers", "2", sandbox=sandbox, name="a") as first,
            serving(database_url, tmp_path / "b", "--workers", "2", sandbox=sandbox, name="b", migrate=False) as second,
        ):
            # Each of the four workers contends for each leadership once at start, and says how it came out.
            def all_contended() -> bool:
                seen = Counter(line["name"] for line in leadership_lines([first, second]))
                return all(seen[name] == 4 for name in BACKGROUND)

            wait_until(all_contended)
            lines = leadership_lines([first, second])
    assert len({line["pid"] for line in lines}) == 4  # four workers, two instances
    for name in BACKGROUND:
        outcomes = sorted(line["event"] for line in lines if line["name"] == name)
        assert outcomes == ["leadership.standby"] * 3 + ["leadership.taken"], (name, outcomes)


def handled_by(served: Served, method: str, path_start: str) -> list[int]:
    """The worker pid of each request whose access line starts with `method path_start`, in order."""
    return [
        line["pid"]
        for line in served.lines()
        if line.get("logger") == "salesbot" and line["message"].startswith(f"{method} {path_start}")
    ]


async def test_a_change_made_by_one_worker_is_seen_by_the_other(database_url: str, tmp_path: Path) -> None:
    """Each round connects a store (the callback stores a new token) and disconnects it, each request on a
    new connection, so either worker may take it. The disconnect reads the token through its worker's cache
    and gives it up at the stand-in: a worker serving what it cached before the other's write would give
    up nothing (a token already given up, or none). Rounds go on until both workers have done both and
    one round wrote in one worker and read in the other."""
    shop = "fresh-shop"
    domain = f"{shop}.myshopify.com"
    with sandbox_over_http() as sandbox, serving(database_url, tmp_path, "--workers", "2", sandbox=sandbox) as served:
        async with served.browser(keep_alive=False) as browser:
            for round_ in range(1, 61):
                connected = await connect_shop(browser, shop)
                assert connected.status_code == 200, connected.text
                issued = sandbox[0].valid_shopify_tokens(domain)
                assert len(issued) == 1
                form = {"csrf_token": await csrf_of(browser)}
                disconnected = await browser.post(f"/shopify/{domain}/disconnect", data=form, follow_redirects=False)
                assert disconnected.status_code == 303, disconnected.text
                messages = [message["text"] for message in (await status_json(browser))["messages"]]
                assert any("its access was removed at Shopify" in text for text in messages), (round_, messages)
                assert sandbox[0].valid_shopify_tokens(domain) == set()  # the token just issued was given up
                callbacks = handled_by(served, "GET", "/shopify/callback")
                disconnects = handled_by(served, "POST", f"/shopify/{domain}/disconnect")
                # Which worker takes a connection is the kernel's choice: go on until a round wrote in
                # one worker and read in the other (each round above passed either way).
                crossed = any(a != b for a, b in zip(callbacks, disconnects, strict=True))
                if len(set(callbacks)) == 2 and len(set(disconnects)) == 2 and crossed:
                    break
            else:
                raise AssertionError(f"no round crossed workers: {callbacks}, {disconnects}")
