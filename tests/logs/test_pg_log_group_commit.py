"""PostgreSQL log store group commit: appends of several jobs that queue up while one is
being written share a transaction, and each gets the seqs of its own job, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pg_proxy import CuttingProxy

from engine.errors import ValidationFailed
from engine.logs.bus import LiveBus
from engine.logs.model import STDOUT, LogLine
from engine.logs.pgstore import PostgresLogStore
from engine.logs.writer import NOTES_DELAY, JobLogWriter


def lines(step: str, *texts: str) -> list[LogLine]:
    return [LogLine(ts=1_700_000_000.25 + i, stream=STDOUT, step=step, line=t)
            for i, t in enumerate(texts)]


async def test_concurrent_appends_of_many_jobs_get_their_jobs_seqs(
    logs: PostgresLogStore,
) -> None:
    await logs.append("job-0", lines("s", "before"))
    # Three appends per job, all at once: most of them meet in the same group.
    calls = [(f"job-{j}", lines(f"s{k}", *(f"j{j} k{k} l{i}" for i in range(k + 1))))
             for k in range(3) for j in range(20)]
    placed = await asyncio.gather(*(logs.append(job, batch) for job, batch in calls))
    for j in range(20):
        job = f"job-{j}"
        mine = [line for (owner, _), got in zip(calls, placed, strict=True) if owner == job
                for line in got]
        offset = 1 if j == 0 else 0
        assert [line.seq for line in mine] == list(range(1 + offset, 7 + offset))
        stored = await logs.read(job)
        assert stored[offset:] == mine
        assert [line.line for line in mine] == [
            f"j{j} k{k} l{i}" for k in range(3) for i in range(k + 1)
        ]
        assert await logs.count(job) == 6 + offset


async def test_an_append_that_cannot_be_stored_fails_alone(logs: PostgresLogStore) -> None:
    async def attempt(job: str, text: str) -> list[LogLine] | Exception:
        try:
            return await logs.append(job, lines("s", text))
        except ValidationFailed as exc:
            return exc

    # A lone surrogate cannot be encoded as UTF-8 for PostgreSQL.
    outcomes = await asyncio.gather(
        *(attempt(f"job-{i}", "bad \udc80" if i == 2 else "good") for i in range(6))
    )
    assert isinstance(outcomes[2], ValidationFailed)
    for i in (0, 1, 3, 4, 5):
        got = outcomes[i]
        assert isinstance(got, list)
        assert [line.seq for line in got] == [1]
        assert await logs.read(f"job-{i}") == got
    assert await logs.count("job-2") == 0


async def test_an_append_whose_answer_was_lost_after_its_commit_is_not_written_twice(
    pg_url: str,
) -> None:
    proxy = CuttingProxy(pg_url)
    logs = PostgresLogStore(await proxy.start(), min_size=1, max_size=1)
    try:
        first = await logs.append("job", lines("s", "one"))
        # The statement is prepared on the connection now: the next answer the proxy
        # drops is that of the insert itself, after its commit.
        proxy.armed = True
        placed = await logs.append("job", lines("s", "two", "three"))
        assert proxy.cuts == 1
        assert [line.seq for line in placed] == [2, 3]
        assert await logs.read("job") == first + placed
        assert await logs.count("job") == 3
        # The next append numbers on from there, on a new connection.
        assert [line.seq for line in await logs.append("job", lines("t", "four"))] == [4]
    finally:
        await logs.close()
        await proxy.close()


async def test_an_append_whose_connection_was_lost_before_it_ran_is_written_once(
    pg_url: str,
) -> None:
    proxy = CuttingProxy(pg_url)
    logs = PostgresLogStore(await proxy.start(), min_size=1, max_size=1)
    try:
        await logs.open()
        # The first answer on the fresh connection is that of preparing the insert: it
        # never ran, so the retry finds nothing of it and writes it.
        proxy.armed = True
        placed = await logs.append("job", lines("s", "one", "two"))
        assert proxy.cuts == 1
        assert [line.seq for line in placed] == [1, 2]
        assert await logs.read("job") == placed
    finally:
        await logs.close()
        await proxy.close()


class _CountingStore(PostgresLogStore):
    """The PostgreSQL log store, counting the appends it is asked for."""

    appends = 0

    async def append(self, job_id: str, lines: Sequence[LogLine]) -> list[LogLine]:
        self.appends += 1
        return await super().append(job_id, lines)


async def test_server_notes_go_out_with_the_next_line_of_a_step(pg_url: str) -> None:
    store = _CountingStore(pg_url)
    bus = LiveBus()
    sub = bus.subscribe("job")
    writer = JobLogWriter("job", store, bus)
    try:
        assert writer.store_notes([("step a completed", 1.0), ("step b ready", 1.0)]) is None
        await writer.flush()  # waits for steps' lines only: none are queued
        assert store.appends == 0
        writer.line("b", "stdout", "hello from b")
        await writer.flush()
        assert store.appends == 1  # the notes and the line in one write, in order
        assert [(line.seq, line.step, line.line) for line in await store.read("job")] == [
            (1, "_server", "step a completed"), (2, "_server", "step b ready"),
            (3, "b", "hello from b")]
        bus.close_job("job")
        assert [item.line async for item in sub] == [
            "step a completed", "step b ready", "hello from b"]
    finally:
        await store.close()


async def test_server_notes_alone_are_written_within_the_delay_or_at_once(pg_url: str) -> None:
    store = _CountingStore(pg_url)
    writer = JobLogWriter("job", store)
    try:
        writer.store_notes([("step a started", 1.0)])
        assert store.appends == 0
        await asyncio.sleep(NOTES_DELAY)
        # Nothing else comes: the notes are written on their own.
        for _ in range(100):
            if await store.read("job"):
                break
            await asyncio.sleep(0.05)
        assert [line.line for line in await store.read("job")] == ["step a started"]

        writer.store_notes([("job completed", 2.0)], promptly=True)
        await writer.flush()
        assert [line.line for line in await store.read("job")][-1] == "job completed"

        writer.store_notes([("a note", 3.0)])
        await writer.flush(everything=True)
        assert [line.line for line in await store.read("job")][-1] == "a note"
        assert store.appends == 3
    finally:
        await store.close()
