"""The batching loop: what callers submit while a batch runs waits for the next one (DESIGN.md, "The vault").

Batches run one at a time, so they grow with the load; an item that arrives while nothing runs goes
straight through, in its caller's task (no queue, no task switch). Writes use it as group commit (one
transaction, one commit per batch; a failed batch is retried item by item, so one bad write fails
only its caller); PostgreSQL cache misses use it to answer many lookups with one query.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
DEFAULT_MAX_BATCH = 256

# Runs a batch; returns one result per item, in order, or raises (then nothing of the batch took effect).
Runner = Callable[[Sequence[T]], Awaitable[Sequence[R]]]
# Told each batch's size and seconds, once it ran (service/metrics.py).
Observer = Callable[[int, float], None]


class Batcher(Generic[T, R]):
    def __init__(self, run: Runner[T, R], *, max_batch: int = DEFAULT_MAX_BATCH, isolate_failures: bool) -> None:
        self._run = run
        self._max_batch = max_batch
        self._isolate = isolate_failures
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self._direct = False  # an item is running in its caller's task
        self.batches = 0
        self.observer: Observer | None = None

    async def submit(self, item: T) -> R:
        """The item's result once its batch ran; raises what running it (alone, if isolated) raised."""
        if not self._direct and not self._queue and (self._task is None or self._task.done()):
            return await self._run_direct(item)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._queue.append((item, future))
        if not self._direct and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._loop())
        # Shielded: a caller that stops waiting does not take its item back out of a running batch.
        return await asyncio.shield(future)

    async def _run_direct(self, item: T) -> R:
        # Items that arrive meanwhile queue; the loop starts for them once this one is done. The
        # runner itself must finish what it started if this caller is cancelled (the backends do).
        self._direct = True
        self.batches += 1
        try:
            (result,) = await self._timed([item])
            return result
        finally:
            self._direct = False
            if self._queue:
                self._task = asyncio.create_task(self._loop())

    async def drain(self) -> None:
        """Wait until everything submitted so far has run."""
        while self._direct or (self._task is not None and not self._task.done()):
            if self._task is None or self._task.done():
                await asyncio.sleep(0)  # a direct run is finishing in its caller's task
            else:
                await asyncio.shield(self._task)

    async def _loop(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            self.batches += 1
            try:
                results = await self._timed([item for item, _ in batch])
            except asyncio.CancelledError:
                self._cancel(batch)
                raise
            except Exception as error:
                if not self._isolate or len(batch) == 1:
                    for _, future in batch:
                        _settle(future, error=error)
                else:
                    await self._one_by_one(batch)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                _settle(future, result)

    async def _timed(self, items: Sequence[T]) -> Sequence[R]:
        began = time.perf_counter()
        results = await self._run(items)
        if self.observer is not None:
            self.observer(len(items), time.perf_counter() - began)
        return results

    async def _one_by_one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        # The batch rolled back as a whole: run each item alone to give each caller its own outcome.
        for position, (item, future) in enumerate(batch):
            try:
                (result,) = await self._run([item])
            except asyncio.CancelledError:
                self._cancel(batch[position:])
                raise
            except Exception as error:
                _settle(future, error=error)
            else:
                _settle(future, result)

    def _cancel(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        for _, future in batch + self._queue:
            future.cancel()
        self._queue = []


def _settle(future: asyncio.Future[R], result: R | None = None, *, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)  # type: ignore[arg-type]
    else:
        future.set_exception(error)


def _retrieve(future: asyncio.Future[R]) -> None:
    # A result nobody waits for any more (its caller was cancelled) must not be logged as lost.
    if not future.cancelled():
        future.exception()
