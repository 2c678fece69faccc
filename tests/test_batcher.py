"""pipeline.batcher.MicroBatcher: size- and age-bounded batches, never blocking the loop."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.batcher import MicroBatcher


async def test_full_batch_is_released_at_once() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=4, max_wait_ms=10_000)
    for i in range(10):
        b.put(i)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await b.get() == [0, 1, 2, 3]
    assert await b.get() == [4, 5, 6, 7]
    assert loop.time() - t0 < 0.5  # no waiting for the age limit when full
    assert len(b) == 2


async def test_partial_batch_waits_for_the_oldest_items_age() -> None:
    b: MicroBatcher[str] = MicroBatcher(max_batch=100, max_wait_ms=50)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    b.put("a")
    await asyncio.sleep(0.02)
    b.put("b")  # a younger item does not restart the clock
    assert await b.get() == ["a", "b"]
    waited = loop.time() - t0
    assert 0.045 <= waited < 0.5


async def test_get_waits_for_the_first_item_then_its_age() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=3, max_wait_ms=30)
    getter = asyncio.create_task(b.get())
    await asyncio.sleep(0.05)
    assert not getter.done()  # nothing queued: nothing returned
    b.put(1)
    b.put(2)
    b.put(3)  # full: released without waiting 30 ms
    assert await asyncio.wait_for(getter, 0.02) == [1, 2, 3]


async def test_event_loop_keeps_running_while_batching() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=1000, max_wait_ms=100)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    t = asyncio.create_task(ticker())
    b.put(1)
    assert await b.get() == [1]
    t.cancel()
    assert ticks >= 10  # the loop served other tasks during the 100 ms wait


async def test_close_flushes_then_returns_empty() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=10, max_wait_ms=60_000)
    b.put(1)
    b.put(2)
    b.close()
    assert await asyncio.wait_for(b.get(), 0.1) == [1, 2]
    assert await b.get() == []
    with pytest.raises(RuntimeError):
        b.put(3)


async def test_close_wakes_a_waiting_consumer() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=10, max_wait_ms=60_000)
    getter = asyncio.create_task(b.get())
    await asyncio.sleep(0.01)
    b.close()
    assert await asyncio.wait_for(getter, 0.1) == []


async def test_zero_wait_releases_whatever_is_queued() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=10, max_wait_ms=0)
    b.put(7)
    assert await asyncio.wait_for(b.get(), 0.1) == [7]


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(max_batch=0, max_wait_ms=1)
    with pytest.raises(ValueError):
        MicroBatcher(max_batch=1, max_wait_ms=-1)
