"""Time the `salesbot` command's start-up: `--help` and `keys generate`, launch to exit, as a shell runs them.

    .venv/bin/python scripts/time_cli.py [--runs 20] [--salesbot PATH]

Each command runs --runs times in a row after one warm-up run (so the figures are with the OS file
cache warm, as on a server); the figure is the median wall time, with the fastest and slowest run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (["--help"], ["keys", "generate"])


def timed(command: list[str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per command (default: %(default)s)")
    parser.add_argument(
        "--salesbot",
        default=str(Path(sys.executable).with_name("salesbot")),
        help="the console script to time (default: the one beside this Python)",
    )
    args = parser.parse_args()
    print(f"scripts/time_cli.py: {args.runs} runs each after one warm-up, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as cwd:  # no .env, no database: start-up alone
        for arguments in COMMANDS:
            command = [args.salesbot, *arguments]
            timed(command, cwd)
            runs = [timed(command, cwd) for _ in range(args.runs)]
            print(
                f"salesbot {' '.join(arguments):<14} median {statistics.median(runs):.3f} s, "
                f"min {min(runs):.3f} s, max {max(runs):.3f} s"
            )


if __name__ == "__main__":
    main()
