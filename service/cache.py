"""An in-process cache of decrypted token values, in front of the database.

The bot reads a token for every message it answers and tokens change rarely, so a hit must cost a
dict lookup: no thread hop to the SQLite driver, no query, no decryption. What this module does:

- Bounded: least recently used entries go beyond `max_size`. Absent keys are cached too (as None).
- Misses coalesce and batch: every miss queued while a query runs is answered by the next single
  `WHERE key IN (...)` query, and concurrent misses of one key share one load.
- Invalidation wins every race. A load that was already under way when its key was invalidated
  still answers its callers (their reads began before the write ended), but does not fill the cache:
  `invalidate` forgets the in-flight load, so a read that starts afterwards starts a fresh one.

When to invalidate is not decided here: service/changes.py does that (this process's writes at
commit, other processes' within a bound).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping

# A lookup that found nothing in the cache (None is a cached "no such key").
MISSING: object = object()

DEFAULT_MAX_SIZE = 20_000
DEFAULT_MAX_BATCH = 500  # keys per IN (...) query; well under every driver's parameter limit

# Given keys, returns each key's value, None when absent, or the exception reading that key raised
# (one undecryptable row fails only its own readers).
Loader = Callable[[list[str]], Awaitable[Mapping[str, str | BaseException | None]]]


class TokenCache:
    def __init__(self, load: Loader, *, max_size: int = DEFAULT_MAX_SIZE, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._load = load
        self.max_size = max_size
        self._max_batch = max_batch
        self._values: OrderedDict[str, str | None] = OrderedDict()
        self._loads: dict[str, asyncio.Future[str | None]] = {}  # key -> its load, queued or running
        self._queue: list[tuple[str, asyncio.Future[str | None]]] = []
        self._loader: asyncio.Task[None] | None = None
        self.hits = self.misses = self.queries = 0

    def __len__(self) -> int:
        return len(self._values)

    def lookup(self, key: str) -> str | object | None:
        """The cached value (None: known absent), or MISSING. Never waits."""
        value = self._values.get(key, MISSING)
        if value is not MISSING:
            self._values.move_to_end(key)
            self.hits += 1
        return value

    async def load(self, key: str) -> str | None:
        """Read through the database: joins a load of the same key if one is queued or running."""
        self.misses += 1
        future = self._loads.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            self._loads[key] = future
            self._queue.append((key, future))
            if self._loader is None or self._loader.done():
                self._loader = asyncio.create_task(self._run_loads())
        # Shielded: a caller that gives up must not cancel the load other callers wait for.
        return await asyncio.shield(future)

    def invalidate(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._values.pop(key, None)
            self._loads.pop(key, None)

    def put(self, key: str, value: str | None) -> None:
        """A value known to be the committed one (this process just wrote it): replaces any load."""
        self._loads.pop(key, None)
        self._fill(key, value)

    def clear(self) -> None:
        self._values.clear()
        self._loads.clear()

    def _fill(self, key: str, value: str | None) -> None:
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self.max_size:
            self._values.popitem(last=False)

    async def _run_loads(self) -> None:
        # One query at a time: misses that arrive meanwhile wait for the next, bigger batch.
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            self.queries += 1
            try:
                found = await self._load(list({key: None for key, _ in batch}))
            except asyncio.CancelledError:
                self._abandon(batch + self._queue)
                self._queue = []
                raise
            except Exception as error:
                self._abandon(batch, error)
                continue
            for key, future in batch:
                result = found.get(key)
                if self._loads.get(key) is future:
                    # Still the current load of this key: nothing invalidated it since it was queued.
                    del self._loads[key]
                    if not isinstance(result, BaseException):
                        self._fill(key, result)
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _abandon(self, batch: list[tuple[str, asyncio.Future[str | None]]], error: Exception | None = None) -> None:
        for key, future in batch:
            if self._loads.get(key) is future:
                del self._loads[key]
            if future.done():
                continue
            if error is None:
                future.cancel()
            else:
                future.set_exception(error)


def _retrieve(future: asyncio.Future[str | None]) -> None:
    # A load whose every caller gave up (cancelled) still ends; its error must not be logged as lost.
    if not future.cancelled():
        future.exception()
