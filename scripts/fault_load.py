"""Fault load: many merchants at once over real HTTP, two `salesbot serve` processes on one SQLite file.

    .venv/bin/python scripts/fault_load.py --merchants 500 --faults 100 --concurrency 100

The sandbox's token endpoint fails `--faults` times (500s, malformed and truncated JSON, missing fields,
dropped connections, answers slower than the client timeout). Checked afterwards: every merchant ends
connected, every refused attempt was a clear 502/504 page, no "database is locked" or 500 in either
process's log, no lost row, and every shop's token and link sit on the account its own flow ended in.
The last line is the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.reliability.load_harness import run_load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merchants", type=int, default=500)
    parser.add_argument("--faults", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    # The sandbox's "drop" fault makes uvicorn log a traceback per dropped connection: expected, and noise here.
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    result = asyncio.run(run_load(merchants=args.merchants, faults=args.faults, concurrency=args.concurrency))
    for name, items in (
        ("unexpected", result.unexpected),
        ("lost", result.lost),
        ("cross-linked", result.cross_linked),
        ("log", result.log_problems),
    ):
        for item in items[:10]:
            print(f"{name}: {item}")
    print(f"refused attempts by code: {dict(result.failures)}; accounts {result.accounts}")
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
