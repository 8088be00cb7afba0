"""scripts/bench_api.py, a tiny run: figures not looked at (speed is measured by the script, never asserted
here); what is checked is that both comparisons ran to the end and printed their lines."""

from __future__ import annotations

from pathlib import Path

from tests.command import run_script


def test_the_api_benchmark_runs_both_comparisons(tmp_path: Path) -> None:
    lines = run_script(tmp_path, "bench_api.py", "--requests", "60", timeout=300)
    labels = [line.split("  ")[0] for line in lines]
    for label in (
        "GET /healthz (baseline)",
        "GET /api/v1/pages/101 (read key)",
        "POST /api/v1/shops/bench-api/graphql",
    ):
        assert label in labels, "\n".join(lines)
    assert any(line.startswith("page / healthz at p50: ") for line in lines)
    assert any(line.startswith("proxy overhead at p50: ") for line in lines)
