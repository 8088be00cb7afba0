"""Leadership: a named piece of work runs in one process at a time, and a holder that dies blocks nobody."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import asyncpg
import pytest

from service.leadership import Leadership, advisory_key, run_periodically
from service.settings import Settings

HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from service.leadership import Leadership

    async def main():
        lead = Leadership(sys.argv[1], sys.argv[2])
        assert await lead.acquire()
        print("held", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_a_second_holder_is_refused_until_the_first_lets_go(migrated: Settings) -> None:
    url = migrated.database_url
    async with Leadership(url, "sweep") as first, Leadership(url, "sweep") as second:
        assert await first.acquire()
        assert not await second.acquire()
        assert await first.held() and not await second.held()
        assert await first.acquire()  # taking what it holds is a no-op
        async with Leadership(url, "housekeeping") as other_name:
            assert await other_name.acquire()  # another name is another lock
        await first.release()
        assert not await first.held()
        assert await second.acquire()
        assert not await first.acquire()


async def test_a_holder_killed_mid_work_lets_go_and_a_waiter_takes_over(migrated: Settings) -> None:
    url = migrated.database_url
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, "sweep"], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        assert child.stdout is not None
        assert await asyncio.to_thread(child.stdout.readline) == "held\n"
        async with Leadership(url, "sweep") as waiter:
            assert not await waiter.acquire()
            waiting = asyncio.create_task(waiter.acquire(wait=True))
            await asyncio.sleep(0)
            assert not waiting.done()
            child.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel or the server lets go
            async with asyncio.timeout(30):
                assert await waiting
            assert await waiter.held()
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


async def test_periodic_work_runs_in_one_of_three_contenders_then_moves_when_it_stops(migrated: Settings) -> None:
    url = migrated.database_url
    runs: list[int] = []
    enough = asyncio.Event()

    def worker(number: int):
        async def work() -> None:
            runs.append(number)
            if len(runs) >= 10:
                enough.set()

        return work

    tasks = [asyncio.create_task(run_periodically(url, "sweep", worker(n), 0.01, first_after=0)) for n in range(3)]
    try:
        async with asyncio.timeout(30):
            await enough.wait()
        leaders = set(runs)
        assert len(leaders) == 1, runs
        (leader,) = leaders
        tasks[leader].cancel()
        enough.clear()
        runs.clear()
        async with asyncio.timeout(30):
            await enough.wait()
        assert len(set(runs)) == 1 and leader not in runs, runs
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.postgres
async def test_a_postgres_holder_whose_connection_is_terminated_knows_it_lost_the_lock(
    scratch_postgres: str,
) -> None:
    async with Leadership(scratch_postgres, "sweep") as first, Leadership(scratch_postgres, "sweep") as second:
        assert await first.acquire()
        admin = await asyncpg.connect(scratch_postgres.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            terminated = await admin.fetchval(
                # Advisory locks are per database; pg_locks shows the whole server's (another suite's too).
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND objid = ($1::bigint & 4294967295)::oid "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                advisory_key("sweep"),
            )
        finally:
            await admin.close()
        assert terminated == 1
        assert not await first.held()
        assert await second.acquire()


def test_a_name_that_could_not_be_a_file_name_is_refused(migrated: Settings) -> None:
    with pytest.raises(ValueError, match="lower-case letters"):
        Leadership(migrated.database_url, "../etc")
