"""PrioritySlots: priority order, FIFO within a priority, aging bounds starvation."""

from __future__ import annotations

import asyncio

import pytest

from engine.priority import PrioritySlots, clamp, effective


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_effective_priority_gains_a_level_per_aging_interval() -> None:
    assert effective(5, 0.0, 10.0) == 5
    assert effective(5, 9.9, 10.0) == 5
    assert effective(5, 10.0, 10.0) == 4
    assert effective(5, 100.0, 10.0) == 1  # never better than the highest
    assert effective(5, 100.0, None) == 5  # no aging: the priority stays
    assert clamp(None) == 3 and clamp(0) == 1 and clamp(9) == 5


async def test_slots_go_by_priority_then_first_come_first_served() -> None:
    slots = PrioritySlots(1)
    first = await slots.acquire(3, "holder")
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        ticket = await slots.acquire(priority, name)
        order.append(name)
        slots.release(ticket)

    tasks = []
    for name, prio in [("low-a", 5), ("mid-a", 3), ("high-a", 1), ("low-b", 5), ("high-b", 1),
                       ("mid-b", 3)]:
        tasks.append(asyncio.ensure_future(wait(name, prio)))
        await _settle()
    assert slots.waiting == 6 and slots.holders() == ["holder"]
    slots.release(first)
    await asyncio.gather(*tasks)
    assert order == ["high-a", "high-b", "mid-a", "mid-b", "low-a", "low-b"]
    assert slots.in_use == 0


async def test_a_cancelled_waiter_does_not_keep_a_slot() -> None:
    slots = PrioritySlots(1)
    first = await slots.acquire(1, "a")
    gone = asyncio.ensure_future(slots.acquire(1, "gone"))
    later = asyncio.ensure_future(slots.acquire(5, "later"))
    await _settle()
    gone.cancel()
    await _settle()
    slots.release(first)
    ticket = await asyncio.wait_for(later, 1)
    assert slots.holders() == ["later"]
    slots.release(ticket)
    assert slots.in_use == 0


async def _flood(aging: float | None) -> tuple[int, int]:
    """One slot; a priority-5 waiter, then a steady flood of priority-1 waiters (two
    new ones per step run, so the queue of high-priority work never empties). Returns
    (steps run before the low-priority one, steps run in all)."""
    clock = Clock()
    slots = PrioritySlots(1, aging=aging, clock=clock)
    ran: list[str] = []
    ticket = await slots.acquire(1, "busy")
    waiters = [asyncio.ensure_future(slots.acquire(5, "low"))]
    await _settle()
    for i in range(60):
        for j in range(2):
            waiters.append(asyncio.ensure_future(slots.acquire(1, f"high-{i}-{j}")))
        await _settle()
        clock.t += 1.0  # each step runs for one second
        slots.release(ticket)
        await _settle()
        holder = slots.holders()[0]
        ran.append(holder)
        ticket = next(t for t, h in slots._held.items() if h == holder)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    return (ran.index("low") if "low" in ran else len(ran)), len(ran)


async def test_aging_lets_low_priority_work_progress_under_a_flood() -> None:
    # Without aging the flood starves the low-priority waiter for the whole run...
    before, total = await _flood(None)
    assert before == total == 60
    # ...with aging (one level per 10 s) it runs after about 4 aging intervals.
    before, total = await _flood(10.0)
    assert total == 60
    assert before <= 45, before


@pytest.mark.parametrize("limit", [1, 3])
async def test_never_more_holders_than_the_limit(limit: int) -> None:
    slots = PrioritySlots(limit, aging=0.001)
    peak = 0

    async def work(i: int) -> None:
        nonlocal peak
        ticket = await slots.acquire(1 + i % 5, f"job-{i}")
        peak = max(peak, slots.in_use)
        await asyncio.sleep(0)
        slots.release(ticket)

    await asyncio.gather(*(work(i) for i in range(50)))
    assert peak == limit and slots.in_use == 0 and slots.waiting == 0
