from __future__ import annotations

import asyncio

from engine.logs.bus import LiveBus


async def _collect(sub: object) -> list[object]:
    return [item async for item in sub]  # type: ignore[attr-defined]


async def test_items_reach_every_subscriber_in_order_then_end() -> None:
    bus = LiveBus()
    first, second = bus.subscribe("j"), bus.subscribe("j")
    other = bus.subscribe("k")
    tasks = [asyncio.create_task(_collect(sub)) for sub in (first, second)]
    await asyncio.sleep(0)
    for i in range(5):
        bus.publish("j", i)
        if i == 2:
            await asyncio.sleep(0)
    bus.close_job("j")
    assert await asyncio.gather(*tasks) == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    assert first.closed and not first.overflowed
    assert not other.closed
    assert bus.subscribers("j") == 0 and bus.subscribers("k") == 1


async def test_close_job_delivers_queued_items_first() -> None:
    bus = LiveBus()
    sub = bus.subscribe("j")
    bus.publish("j", "a")
    bus.publish("j", "b")
    bus.close_job("j")
    bus.publish("j", "too late")
    assert await _collect(sub) == ["a", "b"]


async def test_overflow_drops_only_the_slow_subscriber() -> None:
    bus = LiveBus()
    slow = bus.subscribe("j", maxsize=3)
    fast = bus.subscribe("j", maxsize=3)
    received: list[object] = []

    async def consume() -> None:
        async for item in fast:
            received.append(item)

    task = asyncio.create_task(consume())
    for i in range(10):
        bus.publish("j", i)  # never blocks, never raises
        await asyncio.sleep(0)  # the fast one keeps up; the slow one never reads
    assert slow.overflowed and slow.closed
    assert await _collect(slow) == []  # its iterator ends at once
    assert not fast.overflowed and not fast.closed
    assert bus.subscribers("j") == 1
    bus.close_job("j")
    await task
    assert received == list(range(10))


async def test_close_and_context_manager() -> None:
    bus = LiveBus()
    with bus.subscribe("j") as sub:
        bus.publish("j", 1)
    assert sub.closed
    assert await _collect(sub) == []
    assert bus.subscribers("j") == 0

    async with bus.subscribe("j") as sub2:
        waiter = asyncio.create_task(_collect(sub2))
        await asyncio.sleep(0)
    # Closing wakes a consumer that is waiting.
    assert await asyncio.wait_for(waiter, 1) == []
