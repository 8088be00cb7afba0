"""scripts/bench.py without the seed chapter (or PostgreSQL): it says so in one line and runs the rest.

Tiny runs: their figures are not looked at (speed is measured by the script, never asserted here); what
is checked is that every side ran, lost nothing, and that the run cleans up after itself.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import asyncpg
import pytest

from scripts.bench_vault import QUICK
from tests.command import run_script
from tests.conftest import TEST_DATABASE_URL
from tests.demo_server import free_port


def run_bench(tmp_path: Path, *args: str) -> list[str]:
    return run_script(tmp_path, "bench.py", "--seed", str(tmp_path / "no-seed-here"), *args)


def table(lines: list[str], title: str) -> dict[str, list[str]]:
    """The rows of the table whose title starts with `title`: label -> cells (columns are 2+ spaces apart)."""
    start = next(n for n, line in enumerate(lines) if line.startswith(title)) + 2
    rows = {}
    for line in lines[start:]:
        if not line.strip():
            break
        label, *cells = re.split(r"\s{2,}", line.strip())
        rows[label] = cells
    return rows


def test_bench_without_the_seed_chapter_runs_ours_and_the_floor(tmp_path: Path) -> None:
    missing = tmp_path / "no-seed-here"
    lines = run_bench(tmp_path, "--rounds", "1", "--tokens", "200", "--lookups", "2000", "--workloads", "1")
    assert lines[0] == f"scripts/bench.py: no seed chapter in {missing} (--seed DIR): running ours and the floor only"
    rows = table(lines, "1. reads")
    assert rows["seed"] == ["-"] * 4
    assert rows["ours"][3] == "0" and rows["floor"][3] == "0"  # errors
    assert any(line.startswith("ours / seed: - (no seed chapter)") for line in lines)


def test_vault_workloads_without_postgresql_say_so_in_one_line_and_run_the_rest(tmp_path: Path) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens there
    lines = run_bench(
        tmp_path, "--quick", "--listing-tokens", "2000", "--workloads", "6,7,8,9,10,11", "--postgres", closed
    )
    skipped = [line for line in lines if line.startswith("PostgreSQL at 127.0.0.1")]
    assert len(skipped) == 1 and skipped[0].endswith("skipping workload 8 and the PostgreSQL halves of 9 and 11")
    assert not any(line.startswith("8a.") for line in lines)

    writes = table(lines, "6. one writer")
    assert writes["seed"] == ["-"] * 6
    for side in ("ours", "floor"):  # errors, synchronous, every write read back through a new connection
        assert writes[side][3:] == ["0", "FULL", f"{QUICK.writes}/{QUICK.writes}"]
    assert "ours / seed: - (no seed chapter)" in lines
    reads = table(lines, "7. cold reads")
    assert reads["ours"][3] == "0" and reads["floor"][3] == "0" and reads["seed"] == ["-"] * 5

    freshness = table(lines, "9. freshness")
    assert freshness["ours, SQLite"][0] == "0"  # stale reads after the delete returned
    assert freshness["ours, SQLite"][-1] == f"yes ({QUICK.shell_changes}/{QUICK.shell_changes})"
    assert freshness["ours, PostgreSQL"] == ["-"] * 7

    listing = table(lines, "10. listing")
    assert listing["ours get_all_tokens_by_type"][1] == listing["ours iter_tokens_by_type"][1] == "2,000"
    assert listing["seed get_all_tokens_by_type"] == ["-"] * 4

    shopify = table(lines, "11. Shopify")
    assert shopify["get_shopify_token"][2:] == ["-", "-"] and shopify["get_shopify_token"][0] != "-"
    assert shopify["page_connection"][0] != "-" and shopify["shop_connection"][0] != "-"
    assert any(line.startswith("SQLite: page_connection costs ") for line in lines)


async def _databases(url: str) -> set[str]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return {row["datname"] for row in await connection.fetch("SELECT datname FROM pg_database")}
    finally:
        await connection.close()


@pytest.mark.postgres
def test_vault_workloads_on_postgresql_lose_no_write_and_drop_their_scratch_database(tmp_path: Path) -> None:
    assert TEST_DATABASE_URL is not None
    lines = run_bench(tmp_path, "--quick", "--workloads", "8", "--postgres", TEST_DATABASE_URL)
    scratch = re.search(r"scratch database (salesbot_bench_\d+)", "\n".join(lines))
    assert scratch is not None
    writes = table(lines, "8a. one writer on PostgreSQL")
    for side in ("ours (PostgreSQL)", "floor (PostgreSQL)"):
        assert writes[side][3:] == ["0", "synchronous_commit=on", f"{QUICK.writes}/{QUICK.writes}"]
    reads = table(lines, "8b. cold reads on PostgreSQL")
    assert reads["ours (PostgreSQL)"][3] == "0" and reads["floor (PostgreSQL)"][3] == "0"
    assert scratch.group(1) not in asyncio.run(_databases(TEST_DATABASE_URL))


def test_the_sweep_bench_runs_both_phases(tmp_path: Path) -> None:
    # Tiny: its figures are not looked at; that both phases ran and the sweep did work is.
    tiny = ["--connections", "200", "--seconds", "0.5", "--pairs", "1"]
    lines = run_script(tmp_path, "bench_sweep.py", *tiny, timeout=300)
    served = next(line for line in lines if line.startswith("requests served")).split()
    assert int(served[2].replace(",", "")) > 0 and int(served[3].replace(",", "")) > 0
    rounds = next(line for line in lines if line.startswith("sweep:"))
    assert re.search(r"sweep: [1-9]\d* rounds; shops refreshed or refused [1-9]", rounds), rounds
    assert list(tmp_path.iterdir()) == []  # its database was a temporary one


def test_the_peer_bench_without_node_says_why_it_skipped(tmp_path: Path) -> None:
    # No node or npm on PATH: one line saying which is missing, nothing installed, no database made.
    lines = run_script(
        tmp_path, "bench_peer.py", "--rounds", "1", timeout=120,
        PATH=str(tmp_path / "empty-bin"), XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    assert lines == ["skipped: node is not on PATH, so Shopify's adapter cannot run here"]
    assert not (tmp_path / "cache").exists()
