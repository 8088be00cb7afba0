"""What the jobs share: their error, the hook tests interrupt them with, the batch size.

Reading the table batch by batch, and writing back, is the vault's (`store.bulk`, service/vault/bulk.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from service.jobs import DEFAULT_BATCH_SIZE, JobError

__all__ = ["DEFAULT_BATCH_SIZE", "BatchHook", "JobError", "call_hook", "check_batch_size"]


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise JobError("--batch-size must be at least 1.", status=2)


class BatchHook(Protocol):
    """Called after each batch is committed with the number of rows seen so far; tests raise from it to
    simulate an interruption at a known point."""

    def __call__(self, rows_seen: int) -> Any: ...


async def call_hook(hook: Callable[[int], Any] | None, rows_seen: int) -> None:
    if hook is None:
        return
    result = hook(rows_seen)
    if hasattr(result, "__await__"):
        await result
