"""PostgreSQL group commit: appends that queue up while a commit is in flight are written
together (`partitur_append_many`), each with its own checks and its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pg_proxy import CuttingProxy

from engine.core import events as ev
from engine.core.projections import JobRow, StepRow
from engine.errors import ValidationFailed, VersionConflict
from engine.store.base import AppendResult, Outbox, Projection
from engine.store.migrations import load_migrations
from engine.store.postgres import APPEND_LOCK, PostgresStore
from engine.store.work import WorkItem


def output(n: int, value: object = None) -> ev.StepOutput:
    return ev.StepOutput(ts=1_700_000_000.25 + n, step="a", output={"n": n, "v": value})


def projection(job_id: str, version: int) -> Projection:
    job = JobRow(
        job_id=job_id, workspace="ws", task_name="t", revision="r1", status="running",
        source_type="user", source_id=None, parent_job_id=None, input={"x": [1, "two"]},
        output=None, error=None, created_at=1_700_000_000.5, started_at=1_700_000_001.0,
        completed_at=None, priority=3, created_by="me", retry_of=None, version=version,
    )
    steps = tuple(
        StepRow(
            job_id=job_id, step_name=name, position=i, action_name="a", action_type="shell",
            status="completed" if i == 0 else "pending", attempt=1,
            input={"r": i} if i == 0 else None, output={"o": 0.1} if i == 0 else None,
            error_message=None, error_kind=None, exit_code=0 if i == 0 else None,
            worker_id="w" if i == 0 else None, started_at=1.5 if i == 0 else None,
            completed_at=2.25 if i == 0 else None, loop_of=None, loop_index=None,
            skip_reason=None, message="m'\"{}" if i == 0 else None,
            depends_on=() if i == 0 else ("s0",), retry_at=None, child_job_id=None,
        )
        for i, name in enumerate(("s0", "s1"))
    )
    return Projection(job, steps)


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def test_the_append_function_takes_the_append_lock() -> None:
    (sql,) = [m.sql for m in load_migrations("postgres") if m.name == "append_function"]
    assert f"pg_advisory_xact_lock({APPEND_LOCK})" in sql


async def test_concurrent_appends_are_written_whole_and_in_seq_order(
    store: PostgresStore,
) -> None:
    n = 40
    results = await asyncio.gather(*(
        store.append(f"job{i}", 0, [output(i), output(i + 100, "x")],
                     projection=projection(f"job{i}", 2))
        for i in range(n)
    ))
    seqs = sorted(e.global_seq for r in results for e in r.events)
    assert seqs == list(range(1, 2 * n + 1))
    stored = await store.tail(0, 1000)
    assert [e.global_seq for e in stored] == seqs
    for i, result in enumerate(results):
        assert [e.version for e in result.events] == [1, 2]
        assert await store.read(f"job{i}") == result.events
        expected = projection(f"job{i}", 2)
        assert await store.get_job(f"job{i}") == expected.job
        assert await store.get_steps(f"job{i}") == list(expected.steps)


async def test_each_append_of_a_group_has_its_own_outcome(store: PostgresStore) -> None:
    await store.append("taken", 0, [output(0)])

    async def attempt(i: int) -> AppendResult | Exception:
        try:
            if i == 3:  # the stream is at version 1
                return await store.append("taken", 0, [output(i)])
            if i == 5:  # PostgreSQL cannot store a NUL in a JSON string
                return await store.append("bad", 0, [output(i, "a\x00b")])
            return await store.append(f"s{i}", 0, [output(i)], projection=projection(f"s{i}", 1))
        except (VersionConflict, ValidationFailed) as exc:
            return exc

    outcomes = await asyncio.gather(*(attempt(i) for i in range(10)))
    assert isinstance(outcomes[3], VersionConflict)
    assert isinstance(outcomes[5], ValidationFailed)
    written = [o for o in outcomes if isinstance(o, AppendResult)]
    assert len(written) == 8
    assert sorted(o.last_seq for o in written) == list(range(2, 10))
    assert [e.version for e in await store.read("taken")] == [1]
    assert await store.read("bad") == []
    assert await store.last_seq() == 9


async def test_work_queued_by_appends_of_a_group_is_queued_with_them(
    store: PostgresStore,
) -> None:
    await store.append("taken", 0, [output(0)])

    def work(job: str) -> Outbox:
        return Outbox(work=[
            WorkItem(job, "a", 1, 5, 1_700_000_000.5, ("linux", "big")),
            WorkItem(job, "b", 2, 0, 1_700_000_001.0),
        ])

    async def attempt(i: int) -> AppendResult | Exception:
        job = "taken" if i == 2 else f"w{i}"  # the append to "taken" is refused
        try:
            return await store.append(job, 0, [output(i)], outbox=work(job))
        except VersionConflict as exc:
            return exc

    outcomes = await asyncio.gather(*(attempt(i) for i in range(6)))
    assert isinstance(outcomes[2], VersionConflict)
    assert await store.queued_work("taken") == []
    for i in (0, 1, 3, 4, 5):
        assert isinstance(outcomes[i], AppendResult)
        assert sorted(await store.queued_work(f"w{i}"), key=lambda w: w.step) == list(
            work(f"w{i}").work
        )


async def test_an_append_whose_answer_was_lost_after_its_commit_is_not_written_twice(
    pg_url: str,
) -> None:
    proxy = CuttingProxy(pg_url)
    store = PostgresStore(await proxy.start(), min_size=1, max_size=1)
    try:
        await store.open()
        await store.append("s", 0, [output(1)])
        proxy.armed = True
        result = await store.append("s", 1, [output(2), output(3)],
                                    projection=projection("s", 3))
        assert proxy.cuts == 1
        assert [(e.global_seq, e.version) for e in result.events] == [(2, 2), (3, 3)]
        assert [e.version for e in await store.read("s")] == [1, 2, 3]
        assert await store.read("s", 1) == result.events
        assert await store.last_seq() == 3
    finally:
        await store.close()
        await proxy.close()


async def test_own_appends_cover_only_this_stores_appends(
    store: PostgresStore, pg_url: str
) -> None:
    """What lets a replica skip reading back its own appends: a range is covered only
    when every event in it was appended through this store object."""
    other = PostgresStore(pg_url)
    await other.open()
    try:
        start = await store.last_seq()
        await store.append("own-a", 0, [output(0), output(1)])
        await asyncio.gather(*(store.append(f"own-{i}", 0, [output(i)]) for i in range(5)))
        mine = await store.last_seq()
        assert mine == start + 7
        assert store.own_appends_cover(start, mine)
        assert not other.own_appends_cover(start, mine)

        await other.append("theirs", 0, [output(9)])
        await store.append("own-b", 0, [output(3)])
        last = await store.last_seq()
        assert not store.own_appends_cover(mine, last)  # `theirs` lies in between
        await store.append("own-c", 0, [output(4)])
        # The ranges up to `last` were forgotten; what came after is still known.
        assert store.own_appends_cover(last, last + 1)
        assert not store.own_appends_cover(start, last + 1)
    finally:
        await other.close()


async def test_a_notified_own_append_is_known_once_the_appends_are_answered(
    store: PostgresStore,
) -> None:
    """The NOTIFY of an append can arrive before the append's answer; a replica waits for
    the answers in flight before asking `own_appends_cover`, instead of reading back its
    own events."""
    start = await store.last_seq()
    heard: asyncio.Queue[int] = asyncio.Queue()
    await store.listen(heard.put_nowait)
    covered: list[bool] = []

    async def follow() -> None:
        cursor = start
        for _ in range(20):
            seq = await heard.get()
            await store.own_appends_answered()
            covered.append(store.own_appends_cover(cursor, seq))
            cursor = seq

    follower = asyncio.ensure_future(follow())
    for i in range(20):
        await store.append(f"heard-{i}", 0, [output(i)])
    await asyncio.wait_for(follower, 10)
    assert covered == [True] * 20
