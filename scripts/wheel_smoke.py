"""The distribution carries what it runs: build the wheel and sdist, install the wheel (with the runtime
lock) into a fresh venv outside the checkout, and run what an operator and a bot run, from a folder with
no checkout in sight.

    .venv/bin/python scripts/wheel_smoke.py        # .ci/run runs it after the tests (about a minute)

`python -m build --no-isolation` builds with the locked setuptools already in this venv: nothing to
download. Every step prints one line; the first failure stops the run with what the command printed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
# Nothing of this checkout or its venv may reach the installed commands.
HIDDEN = ("PYTHONPATH", "VIRTUAL_ENV", "STATE_TOKEN_SECRET", "TOKEN_ENCRYPTION_KEYS", "TOKEN_DB_PATH", "DATABASE_URL")


class Smoke:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.venv = work / "venv"
        self.site = work / "site"  # where the commands run: no checkout here
        self.site.mkdir()
        path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))]
        self.environ = {k: v for k, v in os.environ.items() if k not in HIDDEN}
        self.environ["PATH"] = os.pathsep.join([str(self.venv / "bin"), *path])

    def run(self, *command: str, ok: bool = True, **options: object) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            command, cwd=self.site, env=self.environ, capture_output=True, text=True, timeout=300, **options
        )  # type: ignore[call-overload]
        if ok and result.returncode != 0:
            raise SystemExit(
                f"wheel smoke: `{' '.join(command)}` failed ({result.returncode}):\n{result.stderr[-3000:]}"
            )
        return result

    def step(self, what: str) -> None:
        print(f"wheel smoke: {what}", flush=True)

    @contextmanager
    def server(self, *command: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
        log = self.work / f"{command[1]}.log"
        with open(log, "w") as output:
            process = subprocess.Popen(
                command, cwd=self.site, env=self.environ, stdout=output, stderr=subprocess.STDOUT
            )
        try:
            yield process, log
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"wheel smoke: the server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"wheel smoke: {url} did not answer:\n{log.read_text()[-3000:]}")


BOT = """
import asyncio, sys
from service import Settings, TokenStore

async def main():
    async with TokenStore.open(Settings.load(sys.argv[1] if len(sys.argv) > 1 else None)) as store:
        print(await store.get_token("SHOPIFY_ACCESS_TOKEN_smoke"), len(await store.list_tokens()))

asyncio.run(main())
"""


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="salesbot-wheel-") as tmp:
        smoke = Smoke(Path(tmp))
        dist = smoke.work / "dist"
        built = subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            raise SystemExit(f"wheel smoke: the build failed:\n{built.stdout[-3000:]}{built.stderr[-3000:]}")
        wheel, sdist = next(dist.glob("*.whl")), next(dist.glob("*.tar.gz"))
        smoke.step(f"built {wheel.name} and {sdist.name}")

        smoke.run(sys.executable, "-m", "venv", str(smoke.venv))
        python = str(smoke.venv / "bin" / "python")
        smoke.run(python, "-m", "pip", "install", "-q", "--require-hashes", "-r", str(ROOT / "requirements.lock"))
        smoke.run(python, "-m", "pip", "install", "-q", "--no-deps", str(wheel))
        where = smoke.run(python, "-c", "import service; print(service.__file__)").stdout.strip()
        if not where.startswith(str(smoke.venv)):
            raise SystemExit(f"wheel smoke: service was imported from {where}, not the fresh venv")
        smoke.step(f"installed into a fresh venv; service imports from {where}")

        smoke.run("salesbot", "init")
        missing = smoke.run("salesbot", "tokens", "list", ok=False)
        if missing.returncode != 1 or "salesbot migrate" not in missing.stderr or (smoke.site / "data").exists():
            raise SystemExit(f"wheel smoke: tokens before migrate: {missing.returncode} {missing.stderr}")
        print(smoke.run("salesbot", "migrate").stdout.strip())
        smoke.run("salesbot", "tokens", "set", "SHOPIFY_ACCESS_TOKEN_smoke", "shpat_smoke")
        if smoke.run("salesbot", "tokens", "get", "SHOPIFY_ACCESS_TOKEN_smoke").stdout != "shpat_smoke\n":
            raise SystemExit("wheel smoke: tokens get did not return what tokens set stored")
        listed = json.loads(smoke.run("salesbot", "tokens", "list", "--json").stdout)
        smoke.step(f"init, migrate, tokens set/get/list ({len(listed)} row)")
        if smoke.run(python, "-c", BOT).stdout.split() != ["shpat_smoke", "1"]:
            raise SystemExit("wheel smoke: a bot's TokenStore.open did not read the token")
        smoke.step("a bot's TokenStore.open reads it")

        port = free_port()
        with smoke.server("salesbot", "serve", "--port", str(port), "--workers", "2") as (process, log):
            wait_for(f"http://127.0.0.1:{port}/healthz", process, log)
            page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
            style = httpx.get(f"http://127.0.0.1:{port}/static/app.css", timeout=10)
            if page.status_code != 200 or style.status_code != 200:
                raise SystemExit(f"wheel smoke: serve answered / {page.status_code}, app.css {style.status_code}")
        smoke.step(f"serve --workers 2: /healthz, the page and its stylesheet; stopped with {process.returncode}")

        port = free_port()
        with smoke.server("salesbot", "demo", "--port", str(port)) as (process, log):
            wait_for(f"http://127.0.0.1:{port}/healthz", process, log)
            bot = httpx.get(f"http://127.0.0.1:{port}/bot/webhook?hub.mode=subscribe&hub.verify_token=x", timeout=10)
            consent = httpx.get(f"http://127.0.0.1:{port}/shopify/smoke-shop/login", follow_redirects=True, timeout=10)
            if bot.status_code != 403 or "Local stand-in for Shopify" not in consent.text:
                raise SystemExit(f"wheel smoke: demo's bot answered {bot.status_code}; consent: {consent.status_code}")
            found = re.search(r"with the settings in (\S+demo-bot\.env)", log.read_text())
            if found is None:
                raise SystemExit(f"wheel smoke: the demo named no settings file:\n{log.read_text()[-2000:]}")
            bot_env = Path(found.group(1))
            if smoke.run(python, "-c", BOT, str(bot_env)).stdout.split() != ["None", "0"]:
                raise SystemExit("wheel smoke: a bot could not open the demo's database with demo-bot.env")
        if bot_env.parent.exists():
            raise SystemExit(f"wheel smoke: the demo's folder {bot_env.parent} is still there after SIGTERM")
        smoke.step(
            "demo: the example bot at /bot, the stand-ins, demo-bot.env read by a bot; its folder gone on SIGTERM"
        )
        smoke.step("passed")


if __name__ == "__main__":
    main()
