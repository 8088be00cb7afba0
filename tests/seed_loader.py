"""Load the seed chapter's own `TokenStorage` from its text, so tests and benchmarks run the seed's
real code rather than our paraphrase of it.

The chapter imports FastAPI only for `HTTPException`; when FastAPI is not installed we give it a
two-line stand-in with the same constructor, which is all the seed uses.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # scripts/bench.py loads this module without pytest installed
    import pytest

DEFAULT_SEED_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "seed"


def seed_source(seed_dir: Path = DEFAULT_SEED_DIR) -> str:
    for chapter in sorted(seed_dir.glob("*.txt")):
        for block in re.findall(r"```python\n(.*?)```", chapter.read_text(), flags=re.S):
            if "class TokenStorage" in block:
                return block
    raise FileNotFoundError(f"no chapter in {seed_dir} defines TokenStorage")


def load_seed_module(seed_dir: Path = DEFAULT_SEED_DIR) -> types.ModuleType:
    try:
        import fastapi  # noqa: F401
    except ImportError:
        stub = types.ModuleType("fastapi")

        class HTTPException(Exception):
            def __init__(self, status_code: int, detail: str = "") -> None:
                super().__init__(detail)
                self.status_code, self.detail = status_code, detail

        stub.HTTPException = HTTPException  # type: ignore[attr-defined]
        sys.modules["fastapi"] = stub
    module = types.ModuleType("seed_tokens")
    exec(compile(seed_source(seed_dir), f"{seed_dir}/tokens.py", "exec"), module.__dict__)
    return module


# What a seed deployment held: a store and a Page linked to one account, and the global user token.
SEED_ACCOUNT = "6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b"
SEED_ROWS = {
    "SHOPIFY_ACCESS_TOKEN_acme-7cu19ngr": ("shpat_seed_token", "token"),
    "USER_UUID_acme-7cu19ngr": (SEED_ACCOUNT, "uuid"),
    "FACEBOOK_ACCESS_TOKEN_1234": ("EAAseedpage", "token"),
    "PAGE_UUID_1234": (SEED_ACCOUNT, "uuid"),
    "FACEBOOK_USER_ACCESS_TOKEN": ("EAAseeduser", "token"),
}


def write_seed_database(path: Path, secret: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the seed chapter's own TokenStorage to make the database it would have made."""
    monkeypatch.setenv("STATE_TOKEN_SECRET", secret)
    storage = load_seed_module().TokenStorage(db_path=str(path))
    for key, (value, kind) in SEED_ROWS.items():
        storage.store_token(key, value, type=kind)
