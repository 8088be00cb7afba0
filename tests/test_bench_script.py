"""scripts/bench.py without the seed chapter: it says so in one line and still runs ours and the floor.

A tiny run (its figures are not looked at: speed is measured by the script, never asserted here).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.command import ROOT, clean_environ


def test_bench_without_the_seed_chapter_runs_ours_and_the_floor(tmp_path: Path) -> None:
    missing = tmp_path / "no-seed-here"
    small = ["--rounds", "1", "--tokens", "200", "--lookups", "2000", "--workloads", "1"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--seed", str(missing), *small],
        cwd=tmp_path,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"scripts/bench.py: no seed chapter in {missing} (--seed DIR): running ours and the floor only"
    table = lines[lines.index(next(line for line in lines if line.startswith("1. reads"))) + 2 :][:3]
    rows = {line.split()[0]: line.split()[1:] for line in table}
    assert rows["seed"] == ["-"] * 4
    assert rows["ours"][3] == "0" and rows["floor"][3] == "0"  # errors
    assert "ours / seed: - (no seed chapter)" in result.stdout
