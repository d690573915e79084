"""A numbered log batch is stored once, by whichever store instance gets it again.

`LogStore.append_once` keeps each series' position with the lines (the `log_positions`
row advanced in the insert's transaction on PostgreSQL, a mark on the batch's last line
in a JSONL file), so a second instance on the same data — another replica, or the
server after a restart — skips what the first stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from engine.logs.model import LogLine
from engine.logs.pgstore import PostgresLogStore
from engine.logs.store import JsonlLogStore, LogStore

Factory = Callable[[], LogStore]


def batch(first: int, n: int, step: str = "build") -> list[LogLine]:
    return [LogLine(1_700_000_000.0 + i, "stdout", step, f"line {i}")
            for i in range(first, first + n)]


@pytest.fixture(params=["jsonl", "postgres"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    opened: list[LogStore] = []

    def make() -> LogStore:
        store: LogStore
        if request.param == "jsonl":
            store = JsonlLogStore(tmp_path / "logs")
        else:
            store = PostgresLogStore(request.getfixturevalue("pg_url"))
        opened.append(store)
        return store

    try:
        yield make
    finally:
        for store in opened:
            await store.close()


async def texts(store: LogStore, job: str) -> list[str]:
    return [line.line for line in await store.read(job)]


async def test_a_resent_batch_through_a_second_instance_stores_nothing_twice(
        stores: Factory) -> None:
    first = stores()
    stored, end = await first.append_once("job-1", "lease-a", 0, batch(0, 3))
    assert (len(stored), end) == (3, 3)
    await first.append("job-1", batch(0, 1, step="_server"))  # another writer between
    if isinstance(first, JsonlLogStore):
        await first.close()  # one server per log directory: the second is its restart
    second = stores()

    again, end = await second.append_once("job-1", "lease-a", 0, batch(0, 3))
    assert (again, end) == ([], 3)
    # Overlapping: the first two are known, the last two are new.
    more, end = await second.append_once("job-1", "lease-a", 1, batch(1, 4))
    assert [line.line for line in more] == ["line 3", "line 4"]
    assert [line.seq for line in more] == [5, 6]
    assert end == 5
    assert await texts(second, "job-1") == [
        "line 0", "line 1", "line 2", "line 0", "line 3", "line 4"]
    assert await second.count("job-1") == 6


async def test_series_are_separate_and_a_gap_is_accepted(stores: Factory) -> None:
    store = stores()
    await store.append_once("job-1", "lease-a", 0, batch(0, 2))
    other, end = await store.append_once("job-1", "lease-b", 0, batch(0, 2, step="test"))
    assert (len(other), end) == (2, 2)  # a new lease starts from 0
    gap, end = await store.append_once("job-1", "lease-a", 5, batch(5, 1))
    assert ([line.line for line in gap], end) == (["line 5"], 6)
    stale, end = await store.append_once("job-1", "lease-a", 2, batch(2, 3))
    assert (stale, end) == ([], 6)  # below the position: already accounted for
    assert len(await store.read("job-1")) == 5


async def test_a_new_instance_after_a_restart_knows_the_position(stores: Factory) -> None:
    store = stores()
    await store.append_once("job-2", "lease-a", 0, batch(0, 4))
    await store.close()
    reopened = stores()
    again, end = await reopened.append_once("job-2", "lease-a", 2, batch(2, 3))
    assert [line.line for line in again] == ["line 4"]
    assert end == 5
    assert await texts(reopened, "job-2") == [f"line {i}" for i in range(5)]


async def test_forget_and_finish_drop_positions(stores: Factory) -> None:
    store = stores()
    await store.append_once("job-3", "lease-a", 0, batch(0, 2))
    await store.forget("job-3", "lease-a")
    await store.finish("job-3")
    if isinstance(store, PostgresLogStore):
        pool = store._pool
        async with pool.acquire() as conn:
            left = await conn.fetchval("SELECT count(*) FROM log_positions WHERE job_id = $1",
                                       "job-3")
        assert left == 0
    assert len(await store.read("job-3")) == 2


async def test_replicas_racing_on_one_batch_store_it_once(pg_url: str) -> None:
    replicas = [PostgresLogStore(pg_url) for _ in range(3)]
    try:

        results = await asyncio.gather(*(
            r.append_once("job-4", "lease-a", 0, batch(0, 5)) for r in replicas for _ in (1, 2)))
        assert sorted(len(stored) for stored, _ in results) == [0, 0, 0, 0, 0, 5]
        assert {end for _, end in results} == {5}
        assert [line.seq for line in await replicas[0].read("job-4")] == [1, 2, 3, 4, 5]
    finally:
        for r in replicas:
            await r.close()
