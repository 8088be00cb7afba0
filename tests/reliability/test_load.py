"""Load with faults: 40 merchants at once over real HTTP, two service processes on one SQLite file."""

from __future__ import annotations

from tests.reliability.load_harness import run_load

ONLY_BACKENDS = ["sqlite"]


async def test_concurrent_merchants_with_faults_on_two_processes_sharing_sqlite() -> None:
    result = await run_load(merchants=40, faults=10, concurrency=40)
    assert result.unexpected == [], result.unexpected[:5]
    # Exactly the injected faults were met, each as a clear error page, and every merchant got connected.
    assert sum(result.failures.values()) == 10 and result.faults_left == 0, result.failures
    assert {code for _, code in result.failures} == {"provider_error", "provider_unavailable"}
    assert result.connected == 40 and result.accounts == 40, result.summary()
    assert result.lost == [] and result.cross_linked == [], (result.lost, result.cross_linked)
    assert result.leftover_states == 0  # every state was spent, by success or by failure
    assert result.log_problems == [], result.log_problems[:5]
    assert result.leaked == []  # two real servers at --log-level debug printed no token, code or secret
    assert "GET /shopify/callback" in result.logs  # the logs scanned are the real ones
