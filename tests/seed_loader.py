"""A database the seed wrote, shipped in tests/fixtures/, and the seed chapter's own `TokenStorage`.

Tests adopt and import `tests/fixtures/seed_tokens.db` (written once by the seed's own code, see
tests/fixtures/README.md), so the suite needs nothing outside the repository. When the seed chapter
is at hand (SALESBOT_SEED_DIR, else a `shared/seed` folder beside this checkout), its text is loaded
and run, so tests/test_seed_fixture.py and scripts/bench.py run the seed's real code rather than our
paraphrase of it. The chapter imports FastAPI only for `HTTPException`; when FastAPI is not installed
we give it a two-line stand-in with the same constructor, which is all the seed uses.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import types
from pathlib import Path

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures"
SEED_FIXTURE = FIXTURE_DIR / "seed_tokens.db"
# The STATE_TOKEN_SECRET the seed ran with when it wrote SEED_FIXTURE. Short, as a seed deployment's
# secret may be: `serve`/`migrate` must then warn rather than refuse (the rows depend on it).
SEED_FIXTURE_SECRET = "seed-deployment-secret"
DEFAULT_SEED_DIR = Path(os.environ.get("SALESBOT_SEED_DIR") or Path(__file__).resolve().parents[2] / "shared" / "seed")


def seed_chapter_present(seed_dir: Path = DEFAULT_SEED_DIR) -> bool:
    try:
        seed_source(seed_dir)
    except FileNotFoundError:
        return False
    return True


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


def write_seed_database(path: Path, secret: str, seed_dir: Path = DEFAULT_SEED_DIR) -> None:
    """Run the seed chapter's own TokenStorage to make the database it would have made (needs the chapter).
    The seed reads its secret from the environment when it builds its key, so it is set for that moment."""
    module = load_seed_module(seed_dir)
    saved = os.environ.get("STATE_TOKEN_SECRET")
    os.environ["STATE_TOKEN_SECRET"] = secret
    try:
        storage = module.TokenStorage(db_path=str(path))
    finally:
        if saved is None:
            del os.environ["STATE_TOKEN_SECRET"]
        else:
            os.environ["STATE_TOKEN_SECRET"] = saved
    for key, (value, kind) in SEED_ROWS.items():
        storage.store_token(key, value, type=kind)


def copy_seed_database(path: Path) -> Path:
    """A copy of the shipped database the seed wrote (secret: SEED_FIXTURE_SECRET), to change at will."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SEED_FIXTURE, path)
    return path
