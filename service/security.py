"""Start-up guards: a weak secret, files other users can read.

- `check_secret(settings)` refuses a STATE_TOKEN_SECRET shorter than 32 characters (`serve`, `migrate`,
  `alembic upgrade`), unless values in the database are encrypted under it (a seed deployment): then it
  warns, since changing the secret before `keys rotate` would make them unreadable.
- `insecure_files(settings)` names the settings file and the SQLite database (with its -wal and -shm
  files and its directory) when users other than the owner may read or write them; `salesbot serve`
  and `salesbot migrate` print a warning for each at start-up. The service creates its own files
  0600 and its data directory 0700 (service/db.py, `salesbot init`); this catches files made by hand.
(The filter that keeps secrets in URLs out of httpx's log lines is `logs.redact_http_logs`.)
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from service.crypto import derive_seed_key
from service.db import sqlite_file
from service.errors import SettingsError
from service.settings import MIN_SECRET_LENGTH, Settings
from service.vault import values_under

logger = logging.getLogger("salesbot.security")


def check_secret(settings: Settings) -> None:
    """Refuse a short STATE_TOKEN_SECRET in one sentence, or warn when stored values depend on it."""
    if not settings.weak_secret:
        return
    length = len(str(settings.state_token_secret))
    if values_under(settings.database_url, derive_seed_key(str(settings.state_token_secret))):
        logger.warning(
            "STATE_TOKEN_SECRET is %d characters (under %d), but stored values are encrypted under it, so it is "
            "kept: add a key to TOKEN_ENCRYPTION_KEYS, run `salesbot keys rotate`, then replace the secret.",
            length,
            MIN_SECRET_LENGTH,
        )
        return
    raise SettingsError(
        f"STATE_TOKEN_SECRET is {length} characters; use at least {MIN_SECRET_LENGTH} random ones: `salesbot init` "
        "writes a .env with one (or run: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')."
    )


def _loose(path: Path, *, directory: bool = False) -> str | None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    # A directory others may enter and list (but not write) only shows names; files must be owner-only.
    bad = mode & (0o022 if directory else 0o077)
    if not bad:
        return None
    who = "written by other users" if bad & 0o022 else "readable by other users"
    fix = "700" if directory else "600"
    return f"{path} is {who} (mode {mode:04o}); run: chmod {fix} {path}"


def insecure_files(settings: Settings) -> list[str]:
    """One sentence per file or directory that others can get at, naming it and the fix."""
    problems: list[str] = []
    if settings.env_file is not None:
        problems.append(_loose(Path(settings.env_file)) or "")
    database = sqlite_file(settings.database_url)
    if database is not None:
        problems.append(_loose(database.resolve().parent, directory=True) or "")
        for suffix in ("", "-wal", "-shm"):
            problems.append(_loose(Path(f"{database}{suffix}")) or "")
    return [problem for problem in problems if problem]


def warn_insecure_files(settings: Settings) -> list[str]:
    problems = insecure_files(settings)
    for problem in problems:
        logger.warning("%s", problem)
    return problems
