"""The work tables on SQLite and PostgreSQL: FIFO within priority, tags, leases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.store.postgres import PostgresStore
from engine.store.sqlite import SqliteStore
from engine.store.work import WorkerRow, WorkItem, WorkStore, work_store


@pytest.fixture(params=["sqlite", "postgres"])
async def work(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WorkStore]:
    if request.param == "sqlite":
        store: SqliteStore | PostgresStore = SqliteStore(tmp_path / "w.db")
    else:
        store = PostgresStore(request.getfixturevalue("pg_url"))
    await store.open()
    ws = work_store(store)
    assert ws is not None
    try:
        yield ws
    finally:
        await store.close()


async def test_claims_fifo_within_priority_and_never_twice(work: WorkStore) -> None:
    await work.enqueue([
        WorkItem("j1", "a", 1, priority=3, ready_at=10.0),
        WorkItem("j2", "a", 1, priority=3, ready_at=5.0),
        WorkItem("j3", "a", 1, priority=1, ready_at=20.0),
        WorkItem("j4", "a", 1, priority=5, ready_at=1.0),
    ])
    # A repeat enqueue of the same attempt adds nothing.
    assert await work.enqueue([WorkItem("j1", "a", 1, priority=3, ready_at=99.0)]) == 0
    order = []
    for n in range(5):
        held = await work.claim("w", [], f"lease{n}", now=100.0)
        order.append(None if held is None else held.job_id)
    assert order == ["j3", "j2", "j1", "j4", None]


async def test_tags_must_be_a_subset_of_the_workers(work: WorkStore) -> None:
    await work.enqueue([WorkItem("j1", "gpu", 1, 3, 1.0, ("gpu", "linux")),
                        WorkItem("j2", "plain", 1, 3, 2.0)])
    assert (await work.claim("w1", ["gpu"], "l1", 5.0)).step == "plain"  # type: ignore[union-attr]
    assert await work.claim("w1", ["gpu"], "l2", 5.0) is None
    held = await work.claim("w2", ["linux", "gpu", "x"], "l3", 5.0)
    assert held is not None and held.step == "gpu"


async def test_concurrent_claimers_take_distinct_rows(work: WorkStore) -> None:
    await work.enqueue([WorkItem(f"j{i:02}", "s", 1, 3, float(i)) for i in range(20)])
    got = await asyncio.gather(*(work.claim(f"w{i}", [], f"l{i}", 50.0) for i in range(25)))
    jobs = [h.job_id for h in got if h is not None]
    assert sorted(jobs) == [f"j{i:02}" for i in range(20)]


async def test_lease_renew_finish_expire_release(work: WorkStore) -> None:
    await work.enqueue([WorkItem("j", "s", 1, 3, 1.0), WorkItem("k", "s", 1, 3, 2.0)])
    a = await work.claim("w", [], "la", 10.0)
    b = await work.claim("w", [], "lb", 10.0)
    assert a is not None and b is not None
    assert await work.renew("la", 30.0)
    assert [h.lease for h in await work.expired(before=20.0)] == ["lb"]
    assert await work.finish("lb", "completed", 31.0)
    assert not await work.finish("lb", "completed", 32.0)  # closed once
    assert not await work.renew("lb", 33.0)
    assert await work.expired(before=20.0) == []
    await work.release("la")
    assert [i.job_id for i in await work.open_rows()] == ["j"]
    assert (await work.held("lb")).outcome == "completed"  # type: ignore[union-attr]
    assert [h.lease for h in await work.recent("w")] == ["lb"]


async def test_workers_register_and_touch(work: WorkStore) -> None:
    await work.register(WorkerRow("w1", "one", ("a", "b"), 4, 1.0, 1.0))
    await work.register(WorkerRow("w2", "two", (), 1, 2.0, 2.0))
    assert await work.touch("w1", 9.0)
    assert not await work.touch("nobody", 9.0)
    rows, total = await work.workers(limit=1, offset=0)
    assert total == 2 and [r.worker_id for r in rows] == ["w2"]
    one = await work.worker("w1")
    assert one is not None and one.tags == ("a", "b") and one.last_heartbeat == 9.0


async def test_without_aging_a_flood_of_high_priority_starves_low(work: WorkStore) -> None:
    await work.enqueue([WorkItem("low", "s", 1, priority=5, ready_at=0.0)])
    claimed = []
    for n in range(6):  # a new priority-1 row arrives before every claim
        now = 100.0 * (n + 1)
        await work.enqueue([WorkItem(f"high{n}", "s", 1, priority=1, ready_at=now)])
        held = await work.claim("w", [], f"l{n}", now)
        assert held is not None
        claimed.append(held.job_id)
    assert "low" not in claimed


async def test_with_aging_low_priority_is_claimed_despite_a_flood(work: WorkStore) -> None:
    # aging 10 s: the priority-5 row competes as priority 1 after 40 s, and then it is
    # older than every priority-1 row of the flood.
    await work.enqueue([WorkItem("low", "s", 1, priority=5, ready_at=0.0)])
    claimed = []
    for n in range(10):
        now = 5.0 * (n + 1)
        await work.enqueue([WorkItem(f"high{n}", "s", 1, priority=1, ready_at=now)])
        held = await work.claim("w", [], f"l{n}", now, aging=10.0)
        assert held is not None
        claimed.append(held.job_id)
    assert "low" in claimed
    # Not before it had aged to priority 1 (at 40 s: the 8th claim), then at once.
    assert claimed.index("low") == 7


async def test_aging_raises_one_level_per_period_only(work: WorkStore) -> None:
    # At now=25 with aging 10: the priority-5 row (waited 25 s) is effectively 3, the
    # priority-4 row (waited 5 s) still 4, a fresh priority-3 row 3 but younger.
    await work.enqueue([WorkItem("p5", "s", 1, priority=5, ready_at=0.0),
                        WorkItem("p4", "s", 1, priority=4, ready_at=20.0),
                        WorkItem("p3", "s", 1, priority=3, ready_at=25.0)])
    order = []
    for n in range(3):
        held = await work.claim("w", [], f"l{n}", 25.0, aging=10.0)
        assert held is not None
        order.append(held.job_id)
    assert order == ["p5", "p3", "p4"]


async def test_a_dropped_claim_is_queued_again_other_rows_are_left_alone(
        work: WorkStore) -> None:
    await work.enqueue([WorkItem("j", "a", 1, 3, 1.0), WorkItem("j", "b", 1, 3, 2.0)])
    a = await work.claim("w", [], "la", 10.0)
    b = await work.claim("w", [], "lb", 10.0)
    assert a is not None and b is not None
    assert await work.finish("la", "dropped", 11.0)  # refused: its job was paused
    assert await work.finish("lb", "completed", 11.0)
    # Handed out again: the dropped attempt is open once more, the finished one is not.
    again = [WorkItem("j", "a", 1, 3, 20.0), WorkItem("j", "b", 1, 3, 20.0)]
    assert await work.enqueue(again) == 1
    assert await work.enqueue(again) == 0
    assert [(i.step, i.ready_at) for i in await work.open_rows()] == [("a", 1.0)]
    held = await work.claim("w", [], "la2", 30.0)
    assert held is not None and (held.step, held.attempt, held.lease) == ("a", 1, "la2")
    assert (await work.held("lb")).outcome == "completed"  # type: ignore[union-attr]
