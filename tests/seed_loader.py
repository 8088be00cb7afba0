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
