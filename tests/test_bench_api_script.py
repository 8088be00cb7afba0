"""scripts/bench_api.py, a tiny run: figures not looked at (speed is measured by the script, never asserted
here); what is checked is that both comparisons ran to the end and printed their lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.command import ROOT, clean_environ


def test_the_api_benchmark_runs_both_comparisons(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_api.py"), "--requests", "60"],
        cwd=tmp_path,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    labels = [line.split("  ")[0] for line in lines]
    for label in (
        "GET /healthz (baseline)",
        "GET /api/v1/pages/101 (read key)",
        "POST /api/v1/shops/bench-api/graphql",
    ):
        assert label in labels, result.stdout
    assert any(line.startswith("page / healthz at p50: ") for line in lines)
    assert any(line.startswith("proxy overhead at p50: ") for line in lines)
