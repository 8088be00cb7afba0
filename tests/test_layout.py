"""The layout DESIGN.md draws holds in the code: imports run one way, the vault is reached through its
face, and a provider's token rows are built in one place (vault/rows.py). Read from the source with
`ast`, so a change that breaks a rule fails here with the file and the import that broke it."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.command import ROOT

SERVICE = ROOT / "service"
# The vault's face (service/vault/__init__.py) and its modules of words and rows.
VAULT_PUBLIC = {"service.vault", "service.vault.events", "service.vault.health", "service.vault.rows",
                "service.vault.files"}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (`import a.b`, `from a.b import c`, and `a.b.c` for `from a.b import c`
    when c is a module of its own), wherever the import stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            base = ROOT.joinpath(*node.module.split("."))
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (base / f"{alias.name}.py").exists() or (base / alias.name / "__init__.py").exists())
    return found


def modules(under: Path) -> list[Path]:
    return sorted(under.rglob("*.py"))


def test_outside_the_vault_code_uses_only_its_face() -> None:
    reaching_in = {
        (path.relative_to(ROOT).as_posix(), module)
        for path in modules(SERVICE)
        if "vault" not in path.relative_to(SERVICE).parts
        for module in imports_of(path)
        if module.startswith("service.vault.") and module not in VAULT_PUBLIC
    }
    assert reaching_in == set()


def test_no_part_of_the_vault_imports_the_store_back() -> None:
    """store.py builds its parts (bulk, verdicts, refresh, the event log) and hands itself over; they name
    it only through vault/ports.py's protocols."""
    back = {
        path.relative_to(ROOT).as_posix()
        for path in modules(SERVICE / "vault")
        if path.name not in ("__init__.py", "store.py") and "service.vault.store" in imports_of(path)
    }
    assert back == set()


def test_nothing_imports_the_command_line_entry_back() -> None:
    importers = {
        path.relative_to(ROOT).as_posix() for path in modules(SERVICE) if "service.cli" in imports_of(path)
    }
    assert importers == {"service/__main__.py"}


def test_provider_rows_are_built_only_in_vault_rows() -> None:
    """Routes, the refresher and the jobs ask vault/rows.py for a provider's row; none spells one out."""
    builders = set()
    for path in modules(SERVICE):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "TokenWrite":
                builders.add(path.relative_to(ROOT).as_posix())
    assert builders == {
        "service/vault/rows.py",  # every provider's rows
        "service/vault/store.py",  # the seed's store_token(key, value, type, **metadata), as given
        "service/vault/linking.py",  # an account's UUID entries, and a row joined to its account
        "service/jobs/import_db.py",  # a row of another tokens.db, copied as it was
    }


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_circle_in_the_service() -> None:
    """Imports run one way, lazy ones (inside a function) included: a circle is a module that needs, through
    others, what it is itself needed by."""
    paths = {module_name(path): path for top in ("service", "salesbot_sandbox") for path in modules(ROOT / top)}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import module` needs the module; `from module import name` the module.
                targets = {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in paths else node.module
                           for alias in node.names}
            else:
                continue
            graph[name] |= {target for target in targets if target in paths and target != name}
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []
