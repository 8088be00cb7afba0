"""Crash soak: SIGKILL a process storing tokens through TokenStore hundreds of times, then check the file.

    .venv/bin/python scripts/crash_soak.py --kills 200 --seed 1

Every kill lands at a random point (seeded) while four tasks store token + UUID pairs and overwrite hot
keys; each write the store acknowledged is logged (fsync) before the next. Afterwards: PRAGMA
integrity_check, every acknowledged write read back exactly, no half pair, and `salesbot serve`
answering /healthz on the file. The last line is the summary, e.g. `kills 200, lost 0, integrity ok`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.fernet import Fernet  # noqa: E402

from service import migrate  # noqa: E402
from service.crypto import KeyRing  # noqa: E402
from service.settings import Settings, sqlite_url  # noqa: E402
from tests.demo_server import salesbot_server  # noqa: E402
from tests.reliability.crash_harness import run_kills  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-delay", type=float, default=0.2, help="longest random wait before a kill (s)")
    args = parser.parse_args()
    import httpx

    with tempfile.TemporaryDirectory(prefix="salesbot-crash-") as scratch:
        tmp = Path(scratch)
        db = tmp / "data" / "tokens.db"
        environ = {
            "STATE_TOKEN_SECRET": "crash-soak-state-secret-0123456789",
            "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "DATABASE_URL": sqlite_url(db),
        }
        settings = Settings.from_environ(environ, env_file=None)
        migrate.upgrade(settings.database_url, KeyRing.from_settings(settings))
        began = time.monotonic()
        result = run_kills(environ, db, tmp / "acks.log", kills=args.kills, seed=args.seed, max_delay=args.max_delay)
        with salesbot_server("serve", env=environ, cwd=tmp) as base:
            healthy = httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        print(f"{time.monotonic() - began:.1f} s; {result.summary()}; mid-write kills {result.mid_write_kills}")
        for name, keys in (("lost", result.lost), ("torn", result.torn), ("stale", result.stale_hot)):
            if keys:
                print(f"{name}: {', '.join(keys[:20])}")
        lost = len(result.lost) + len(result.torn) + len(result.stale_hot)
        print(
            f"kills {result.kills}, lost {lost}, integrity {result.integrity}, "
            f"acknowledged {result.acknowledged_pairs}, serve {'ok' if healthy else 'FAILED'}"
        )
        return 0 if result.ok and healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
