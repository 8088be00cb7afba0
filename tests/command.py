"""The `salesbot` and `alembic` commands as an operator runs them: a subprocess, its own folder and environment.

The environment is the test run's minus every setting the service reads, plus what a test gives, so a
developer's exported DATABASE_URL or secret never leaks into a case.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SETTING_PREFIXES = ("STATE_TOKEN", "TOKEN_", "DATABASE_URL", "SHOPIFY_", "FACEBOOK_", "SESSION_", "SALESBOT_", "API_")


def clean_environ(**settings: str) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith(SETTING_PREFIXES)}
    return {**environ, **settings}


def run_script(tmp_path: Path, script: str, *args: str, timeout: float = 600, **env: str) -> list[str]:
    """Run scripts/<script> from `tmp_path`, in clean_environ(**env); its stdout's lines, once it exited 0."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=tmp_path,
        env=clean_environ(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


def _command(name: str) -> list[str]:
    script = BIN / name
    if script.exists():  # the console script pip installed, as in README's commands
        return [str(script)]
    return [sys.executable, "-m", "service" if name == "salesbot" else name]


def salesbot(
    *args: str, cwd: Path, environ: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_command("salesbot"), *args],
        cwd=cwd,
        env=clean_environ(**(environ or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def alembic(*args: str, cwd: Path, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_command("alembic"), *args],
        cwd=cwd,
        env=clean_environ(**(environ or {})),
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], status: int, *fragments: str) -> str:
    """Exit `status`, exactly one line on stderr holding every fragment, no traceback; returns the line."""
    assert result.returncode == status, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
