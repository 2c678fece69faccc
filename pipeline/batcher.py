"""Micro-batching for the model engine: collect items, hand them over in batches.

A batch is released when it is full (``max_batch`` items) or when its *oldest* item has waited
``max_wait_ms``, whichever comes first, so a trickle of messages still sees bounded latency while
a flood gets full batches. Everything is asyncio: ``put`` never blocks (the worker bounds the
number of outstanding messages itself, which is the back-pressure that matters end to end), and
``get`` awaits without holding the event loop.

    batcher = MicroBatcher[Item](max_batch=64, max_wait_ms=20)
    batcher.put(item)              # producer side
    batch = await batcher.get()    # consumer side; [] once closed and empty
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["MicroBatcher"]

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Size- and age-bounded batching of items for one consumer task.

    Args:
        max_batch: largest batch returned by :meth:`get` (>= 1).
        max_wait_ms: longest time the oldest queued item waits for its batch to fill (>= 0).
    """

    def __init__(self, max_batch: int, max_wait_ms: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        # (enqueue time on the loop clock, item); enqueue times are non-decreasing
        self._items: deque[tuple[float, T]] = deque()
        self._changed = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> None:
        """Queue one item. Raises RuntimeError after :meth:`close`."""
        if self._closed:
            raise RuntimeError("MicroBatcher is closed")
        self._items.append((asyncio.get_running_loop().time(), item))
        # Wake the consumer only when it has something new to decide: the first item starts
        # the age clock, a full batch releases at once. Items in between need no wake-up.
        if len(self._items) == 1 or len(self._items) >= self.max_batch:
            self._changed.set()

    def close(self) -> None:
        """Stop accepting items; :meth:`get` releases what is queued at once, then returns []."""
        self._closed = True
        self._changed.set()

    async def get(self) -> list[T]:
        """The next batch (1..max_batch items); ``[]`` only when closed and empty."""
        loop = asyncio.get_running_loop()
        while True:
            if len(self._items) >= self.max_batch or (self._items and self._closed):
                return self._take()
            if self._items:
                remaining = self._items[0][0] + self.max_wait_s - loop.time()
                if remaining <= 0:
                    return self._take()
            elif self._closed:
                return []
            else:
                remaining = None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass  # the oldest item has waited long enough: loop round and release it

    def _take(self) -> list[T]:
        n = min(self.max_batch, len(self._items))
        return [self._items.popleft()[1] for _ in range(n)]
