"""The batching loop on its own: batches grow while one runs, failures stay with their item, and
cancellation leaves no caller waiting forever."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from service.vault.batching import Batcher


class Runner:
    """Runs batches as told: records each, can hold one back, and fails items named 'bad'."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.started = asyncio.Event()

    async def __call__(self, items: Sequence[str]) -> list[str]:
        self.batches.append(list(items))
        self.started.set()
        await self.hold.wait()
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]


async def test_a_lone_item_runs_at_once_and_items_that_arrive_meanwhile_share_the_next_batch() -> None:
    # (The lone item runs in its caller's task: no queue, no task switch.)
    runner = Runner()
    batcher = Batcher(runner, isolate_failures=True)
    runner.hold.clear()
    first = asyncio.create_task(batcher.submit("a"))
    await runner.started.wait()
    rest = [asyncio.create_task(batcher.submit(item)) for item in "bcd"]
    await asyncio.sleep(0)
    runner.hold.set()
    assert await first == "A"
    assert [await task for task in rest] == ["B", "C", "D"]
    assert runner.batches == [["a"], ["b", "c", "d"]]
    assert batcher.batches == 2


async def test_a_failing_item_fails_only_its_caller_when_failures_are_isolated() -> None:
    runner = Runner()
    batcher = Batcher(runner, isolate_failures=True)
    runner.hold.clear()
    first = asyncio.create_task(batcher.submit("a"))
    await runner.started.wait()
    rest = [asyncio.create_task(batcher.submit(item)) for item in ("b", "bad", "c")]
    await asyncio.sleep(0)
    runner.hold.set()
    assert await first == "A"
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert results[0] == "B" and results[2] == "C"
    assert isinstance(results[1], ValueError)
    # The shared batch failed as a whole, then each of its items ran alone.
    assert runner.batches == [["a"], ["b", "bad", "c"], ["b"], ["bad"], ["c"]]


async def test_without_isolation_a_failure_fails_the_whole_batch() -> None:
    runner = Runner()
    batcher = Batcher(runner, isolate_failures=False)
    runner.hold.clear()
    first = asyncio.create_task(batcher.submit("a"))
    await runner.started.wait()
    rest = [asyncio.create_task(batcher.submit(item)) for item in ("b", "bad")]
    await asyncio.sleep(0)
    runner.hold.set()
    await first
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert all(isinstance(result, ValueError) for result in results)
    assert runner.batches == [["a"], ["b", "bad"]]


async def test_a_queued_caller_that_gives_up_does_not_take_its_item_out_of_the_batch() -> None:
    runner = Runner()
    batcher = Batcher(runner, isolate_failures=True)
    runner.hold.clear()
    first = asyncio.create_task(batcher.submit("a"))  # runs at once, in its caller's task
    await runner.started.wait()
    impatient = asyncio.create_task(batcher.submit("b"))
    patient = asyncio.create_task(batcher.submit("c"))
    await asyncio.sleep(0)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    runner.hold.set()
    assert await first == "A"
    assert await patient == "C"
    assert runner.batches == [["a"], ["b", "c"]]  # "b" still ran: its write may already be committing


async def test_items_queued_behind_a_cancelled_direct_caller_still_run() -> None:
    runner = Runner()
    batcher = Batcher(runner, isolate_failures=True)
    runner.hold.clear()
    first = asyncio.create_task(batcher.submit("a"))
    await runner.started.wait()
    queued = asyncio.create_task(batcher.submit("b"))
    await asyncio.sleep(0)
    first.cancel()  # the runner got the cancellation; finishing what it started is its job
    with pytest.raises(asyncio.CancelledError):
        await first
    runner.hold.set()
    assert await queued == "B"
    assert runner.batches == [["a"], ["b"]]


async def test_cancelling_the_loop_mid_batch_cancels_every_waiting_caller() -> None:
    runner = Runner()
    gate = asyncio.Event()
    in_batch = asyncio.Event()

    async def run(items: Sequence[str]) -> list[str]:
        if items != ["a"]:
            in_batch.set()
            await gate.wait()
        return await runner(items)

    batcher = Batcher(run, isolate_failures=True)
    runner.hold.clear()
    first = asyncio.create_task(batcher.submit("a"))
    await runner.started.wait()
    running = asyncio.create_task(batcher.submit("b"))
    await asyncio.sleep(0)
    runner.hold.set()
    await first
    await in_batch.wait()  # "b" is in the loop's batch now
    queued = asyncio.create_task(batcher.submit("c"))
    await asyncio.sleep(0)
    assert batcher._task is not None  # the loop task, which shutdown cancels
    batcher._task.cancel()
    for task in (running, queued):
        with pytest.raises(asyncio.CancelledError):
            await task
    # Nothing is left queued: the next item runs.
    gate.set()
    assert await batcher.submit("d") == "D"


async def test_cancelling_the_loop_while_it_retries_one_by_one_cancels_the_rest() -> None:
    runner = Runner()
    retrying_b = asyncio.Event()
    never = asyncio.Event()

    async def run(items: Sequence[str]) -> list[str]:
        if items == ["b"]:  # the retry of "b" alone: hold it there
            retrying_b.set()
            await never.wait()
        return await runner(items)

    batcher = Batcher(run, isolate_failures=True)
    runner.hold.clear()
    first = asyncio.create_task(batcher.submit("x"))  # runs at once; the rest queue behind it
    await runner.started.wait()
    tasks = [asyncio.create_task(batcher.submit(item)) for item in ("bad", "b", "c")]
    await asyncio.sleep(0)
    runner.hold.set()
    await first
    await retrying_b.wait()
    batcher._task.cancel()  # type: ignore[union-attr]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], ValueError)  # ran alone and failed before the cancel
    assert all(isinstance(result, asyncio.CancelledError) for result in results[1:])
    assert runner.batches == [["x"], ["bad", "b", "c"], ["bad"]]


async def test_drain_waits_for_everything_submitted() -> None:
    runner = Runner()
    batcher = Batcher(runner, isolate_failures=True)
    runner.hold.clear()
    tasks = [asyncio.create_task(batcher.submit(item)) for item in "abc"]
    await runner.started.wait()
    drained = asyncio.create_task(batcher.drain())
    await asyncio.sleep(0)
    assert not drained.done()
    runner.hold.set()
    await drained
    assert all(task.done() for task in tasks)
