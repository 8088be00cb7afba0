"""Group commit: concurrent writes share one transaction and one fsync.

With synchronous=FULL every SQLite commit waits for the disk, and only one writer holds the lock at
a time. So writers queue here; one flusher takes everything queued, runs it in one transaction,
commits once, and only then answers every caller: an acknowledged write is a committed write.
While it commits, new writes queue for the next batch, so batches grow with the load and a lone
write goes straight through (no timer, no added latency).

A write that fails must not fail its neighbours: when a batch fails, the flusher runs each of its
writes again in a transaction of its own, and each caller gets its own outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
DEFAULT_MAX_BATCH = 256

# Runs the given items in ONE transaction and commits it; raises if any failed (nothing committed).
Runner = Callable[[Sequence[T]], Awaitable[None]]


class GroupCommit(Generic[T]):
    def __init__(self, run: Runner[T], *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._run = run
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = self.retried = 0

    async def submit(self, item: T) -> None:
        """Returns once `item` is committed; raises what running it alone raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._queue.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # Shielded: a caller that stops waiting does not take the write back out of the batch.
        await asyncio.shield(future)

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed (or has failed)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            self.batches += 1
            try:
                await self._run([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch + self._queue:
                    future.cancel()
                self._queue = []
                raise
            except Exception as error:
                if len(batch) == 1:
                    _settle(batch[0][1], error)
                    continue
                # Rolled back as a whole: find out which write was at fault by running each alone.
                self.retried += 1
                for item, future in batch:
                    try:
                        await self._run([item])
                    except Exception as own_error:
                        _settle(future, own_error)
                    else:
                        _settle(future, None)
                continue
            for _, future in batch:
                _settle(future, None)


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
