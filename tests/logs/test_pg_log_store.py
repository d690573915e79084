"""The PostgreSQL log store: ordering, gapless seqs across instances, NOTIFY to replicas."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import StoreUnavailable, ValidationFailed
from engine.logs.model import STDERR, STDOUT, LogLine
from engine.logs.pgstore import PostgresLogStore
from engine.store.postgres import PostgresStore


def lines(step: str, *texts: str, stream: str = STDOUT) -> list[LogLine]:
    return [LogLine(ts=1_700_000_000.25 + i, stream=stream, step=step, line=t)
            for i, t in enumerate(texts)]


async def test_append_read_and_count(logs: PostgresLogStore) -> None:
    first = await logs.append("job-1", lines("build", "one", "two"))
    second = await logs.append("job-1", lines("test", "oops", stream=STDERR))
    await logs.append("job-2", lines("build", "other job"))
    assert [line.seq for line in first + second] == [1, 2, 3]
    got = await logs.read("job-1")
    assert got == first + second
    assert got[0] == LogLine(ts=1_700_000_000.25, stream=STDOUT, step="build", line="one",
                             seq=1)
    assert await logs.read("job-1", after=1) == first[1:] + second
    assert await logs.read("job-1", step="test") == second
    assert await logs.read("job-1", limit=2) == first
    assert await logs.read("job-1", step="build", after=1, limit=5) == first[1:]
    assert await logs.count("job-1") == 3
    assert await logs.count("job-2") == 1
    assert await logs.count("nope") == 0
    assert await logs.read("nope") == []
    assert await logs.append("job-1", []) == []


async def test_nul_characters_are_replaced_not_refused(logs: PostgresLogStore) -> None:
    await logs.append("job-1", lines("s", "a\x00b"))
    assert [line.line for line in await logs.read("job-1")] == ["a\ufffdb"]


async def test_bad_job_id_is_refused(logs: PostgresLogStore) -> None:
    with pytest.raises(ValidationFailed):
        await logs.append("../x", lines("s", "x"))


async def test_seqs_stay_contiguous_across_instances(pg_url: str) -> None:
    """Three replicas appending to one job's log: no gap, no duplicate, batches kept whole."""
    replicas = [PostgresLogStore(pg_url) for _ in range(3)]
    try:
        async def writer(r: int) -> list[list[LogLine]]:
            placed = []
            for n in range(30):
                batch = lines(f"r{r}", *(f"{r}:{n}:{i}" for i in range(1 + n % 4)))
                placed.append(await replicas[r].append("job", batch))
            return placed

        batches = [b for per in await asyncio.gather(*(writer(r) for r in range(3)))
                   for b in per]
        total = sum(len(b) for b in batches)
        stored = await replicas[0].read("job")
        assert [line.seq for line in stored] == list(range(1, total + 1))
        assert await replicas[1].count("job") == total
        # Each batch got consecutive seqs, and what append returned is what was stored.
        by_seq = {line.seq: line for line in stored}
        for batch in batches:
            seqs = [line.seq for line in batch]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            assert [by_seq[s] for s in seqs] == batch
        # Each replica's own lines are in the order it wrote them.
        for r in range(3):
            mine = [line.line for line in stored if line.step == f"r{r}"]
            assert mine == [f"{r}:{n}:{i}" for n in range(30) for i in range(1 + n % 4)]
    finally:
        for replica in replicas:
            await replica.close()


async def test_another_replica_is_notified_of_each_append(pg_url: str) -> None:
    producer = PostgresLogStore(pg_url)
    replica = PostgresLogStore(pg_url)
    heard: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    try:
        await replica.listen(lambda job_id, seq: heard.put_nowait((job_id, seq)))
        await producer.append("job-a", lines("s", "1", "2", "3"))
        await producer.append("job-b", lines("s", "x"))
        await producer.append("job-a", lines("s", "4"))
        got = [await asyncio.wait_for(heard.get(), 5) for _ in range(3)]
        assert got == [("job-a", 3), ("job-b", 1), ("job-a", 4)]
        # What the notification announces is readable on the replica.
        assert [line.line for line in await replica.read("job-a", after=0)] == [
            "1", "2", "3", "4"
        ]
    finally:
        await producer.close()
        await replica.close()


async def test_shares_the_event_store_pool(pg_url: str) -> None:
    events = PostgresStore(pg_url)
    await events.open()
    logs = PostgresLogStore(events.pool, url=events.url)
    heard: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    try:
        await logs.listen(lambda job_id, seq: heard.put_nowait((job_id, seq)))
        await logs.append("job", lines("s", "hello"))
        assert await asyncio.wait_for(heard.get(), 5) == ("job", 1)
        await logs.close()
        # Closing the log store leaves the borrowed pool to its owner.
        assert await events.last_seq() == 0
        with pytest.raises(StoreUnavailable):
            await logs.read("job")
    finally:
        await logs.close()
        await events.close()
