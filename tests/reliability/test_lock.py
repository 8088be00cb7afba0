"""The lock files: exact versions with hashes, covering pyproject's dependencies, and what the suite runs on."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) for every requirement in a pip-compile --generate-hashes file."""
    found: dict[str, tuple[str, int]] = {}
    current = None
    for line in path.read_text().splitlines():
        if match := PIN.match(line):
            current = canonical(match.group(1))
            found[current] = (match.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            assert re.fullmatch(r"--hash=sha256:[0-9a-f]{64}( \\)?", line.strip()), line
            version, count = found[current]
            found[current] = (version, count + 1)
        elif line.strip() and not line.lstrip().startswith("#"):
            assert line.startswith("    "), f"{path.name}: a requirement that is not pinned with ==: {line!r}"
    return found


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"]) + (project["optional-dependencies"][extra] if extra else [])
    return {canonical(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in wanted}


@pytest.mark.parametrize(("lock", "extra"), [("requirements.lock", None), ("requirements-test.lock", "test")])
def test_every_dependency_is_pinned_with_hashes(lock: str, extra: str | None) -> None:
    locked = pins(ROOT / lock)
    assert declared(extra) - set(locked) == set(), f"{lock} is stale: refresh it (README, Dependencies: the lock files)"
    assert all(count >= 1 for _version, count in locked.values())
    assert "setuptools" in locked  # the build backend, so `pip install --no-build-isolation -e .` needs no download


def test_the_runtime_lock_agrees_with_the_test_lock() -> None:
    runtime, test = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-test.lock")
    assert {name: runtime[name][0] for name in runtime} == {name: test[name][0] for name in runtime}


def test_the_suite_runs_on_the_locked_versions() -> None:
    # What CI tested is what production installs: every locked package is installed at its pinned version.
    locked = pins(ROOT / "requirements-test.lock")
    installed = {name: metadata.version(name) for name in locked if name != "setuptools"}
    assert {name: version for name, (version, _) in locked.items() if name != "setuptools"} == installed
