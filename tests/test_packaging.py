"""What the wheel is built from (scripts/wheel_smoke.py builds and runs it in CI): every package of
service/, and the one copy of the revisions, mapped into the package."""

from __future__ import annotations

import tomllib

from service import migrate
from tests.command import ROOT

SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_under_service_and_the_sandbox_is_in_the_distribution() -> None:
    found = {
        ".".join(path.relative_to(ROOT).parts[:-1])
        for top in ("service", "salesbot_sandbox")
        for path in (ROOT / top).rglob("__init__.py")
    }
    assert {"service", "salesbot_sandbox"} <= found
    assert found - set(SETUPTOOLS["packages"]) == set()


def test_only_the_demo_imports_the_stand_ins() -> None:
    """The stand-ins are for the demo and the tests: the service itself never reaches for them."""
    importers = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "service").rglob("*.py")
        if "salesbot_sandbox" in path.read_text(encoding="utf-8")
    }
    assert importers == {"service/demo.py"}


def test_the_wheel_maps_the_repositorys_revisions_into_the_package() -> None:
    assert SETUPTOOLS["package-dir"] == {"service.migrations": "migrations"}
    assert {"service.migrations", "service.migrations.versions"} <= set(SETUPTOOLS["packages"])
    # In a checkout there is no second copy: migrate.py finds the repository's own.
    assert not (ROOT / "service" / "migrations").exists()
    assert migrate.MIGRATIONS == ROOT / "migrations"
