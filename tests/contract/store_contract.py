"""The contract every `EventStore` backend must keep (DESIGN §5).

`EventStoreContract` is abstract; a backend's test module subclasses it, sets
`__test__ = True` and implements `create_store(tmp_path)` (an unopened store, fresh for
each test) and, if it needs one, `dispose_store(store)` (e.g. drop the test database).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from store_streams import job_batches, record_job

from engine.core import events as ev
from engine.core.events import RecordedEvent
from engine.core.projections import JobRow, StepRow, job_row, step_rows
from engine.core.state import JobState, StreamCorrupt
from engine.errors import StoreUnavailable, VersionConflict
from engine.store.base import DuplicateKey, EventStore, JobFilter, Outbox, OutboxObject
from engine.store.cloud import CloudObject, CloudRepository, cloud_repository_for
from engine.store.ratewindows import rate_windows
from engine.store.rebuild import rebuild
from engine.store.shards import Shard
from engine.store.slots import SlotClaim, SlotTaken, group_key, held_by
from engine.store.slots import restore as restore_slots
from engine.store.work import WorkItem


def output(step: str, n: int, writer: int = 0) -> ev.StepOutput:
    """A small event for the log-level tests (the store does not check stream shape)."""
    return ev.StepOutput(ts=1_700_000_000.0 + n, step=step, output={"n": n, "writer": writer})


async def snapshot(store: EventStore) -> dict[str, tuple[JobRow | None, list[StepRow]]]:
    """Every job row and its steps, keyed by job id."""
    jobs, total = await store.list_jobs(JobFilter(limit=10_000))
    assert len(jobs) == total
    return {j.job_id: (await store.get_job(j.job_id), await store.get_steps(j.job_id))
            for j in jobs}


class EventStoreContract(ABC):
    __test__ = False

    @abstractmethod
    async def create_store(self, tmp_path: Path) -> EventStore:
        """A fresh, unopened store for one test."""

    async def dispose_store(self, store: EventStore) -> None:  # noqa: B027
        """Clean up after a test (the store is already closed)."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[EventStore]:
        store = await self.create_store(tmp_path)
        await store.open()
        try:
            yield store
        finally:
            await store.close()
            await self.dispose_store(store)

    # --- the log ---------------------------------------------------------------------

    async def test_append_and_read_round_trip(self, store: EventStore) -> None:
        batches = job_batches("job-1", loop=True)
        await record_job(store, "job-1", batches)
        recorded = await store.read("job-1")
        assert [r.event() for r in recorded] == [e for b in batches for e in b]
        assert [r.version for r in recorded] == list(range(1, len(recorded) + 1))
        assert all(r.stream_id == "job-1" for r in recorded)
        assert recorded[0].type == "JobCreated" and recorded[0].schema_version == 1

    async def test_versions_start_at_one_and_append_returns_seqs(self, store: EventStore) -> None:
        first = await store.append("s", 0, [output("a", 1), output("a", 2)])
        second = await store.append("s", 2, [output("a", 3)])
        assert [e.version for e in first.events] == [1, 2]
        assert [e.version for e in second.events] == [3]
        assert [e.global_seq for e in first.events + second.events] == [1, 2, 3]
        assert second.last_seq == 3 == await store.last_seq()
        assert await store.read("s") == first.events + second.events
        assert [e.version for e in await store.read("s", after_version=2)] == [3]
        assert await store.read("missing") == []

    async def test_stale_or_future_version_conflicts_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        state, _ = await record_job(store, "job-1", job_batches("job-1", finish=None)[:2])
        before = await snapshot(store)
        batch = [ev.StepCompleted(ts=1.0, step="fetch"), ev.JobCompleted(ts=2.0)]
        for expected in (0, state.version - 1, state.version + 1):
            with pytest.raises(VersionConflict):
                await store.append(
                    "job-1", expected, batch,
                    projection=None, idempotency=("execute", f"key-{expected}"),
                )
            assert await store.find_key("execute", f"key-{expected}") is None
        assert len(await store.read("job-1")) == state.version
        assert await store.last_seq() == state.version
        assert await snapshot(store) == before

    async def test_conflicting_batch_is_atomic(self, store: EventStore) -> None:
        await store.append("s", 0, [output("a", 1)])
        with pytest.raises(VersionConflict):
            await store.append("s", 0, [output("a", 2), output("a", 3), output("a", 4)])
        assert [r.version for r in await store.read("s")] == [1]
        # The next event still gets the next seq: the failed batch left no gap.
        result = await store.append("s", 1, [output("a", 5)])
        assert result.events[0].global_seq == 2

    async def test_outbox_rows_are_written_with_the_append_or_not_at_all(
        self, store: EventStore
    ) -> None:
        ready = [ev.StepReady(ts=1.0, step="a", input={}, attempt=1),
                 ev.StepReady(ts=1.0, step="b", input={}, attempt=1)]
        rows = [WorkItem("job-1", "a", 1, 3, 1.0, ("gpu", "linux")),
                WorkItem("job-1", "b", 1, 3, 1.0)]
        await store.append("job-1", 0, [output("x", 0)])
        # A conflicting append queues nothing: not its rows, not a key.
        with pytest.raises(VersionConflict):
            await store.append("job-1", 0, ready, outbox=Outbox(work=rows),
                               idempotency=("api", "outbox"))
        assert await store.queued_work("job-1") == []
        await store.append("job-2", 0, [output("x", 0)], idempotency=("api", "taken"))
        with pytest.raises(DuplicateKey):
            await store.append("job-1", 1, ready, outbox=Outbox(work=rows),
                               idempotency=("api", "taken"))
        assert await store.queued_work("job-1") == []
        assert [r.version for r in await store.read("job-1")] == [1]
        # The append that succeeds writes them, exactly as given.
        await store.append("job-1", 1, ready, outbox=Outbox(work=rows))
        assert await store.queued_work("job-1") == rows
        # An attempt already queued is left alone; a new attempt is a new row.
        again = [WorkItem("job-1", "a", 1, 1, 9.0), WorkItem("job-1", "a", 2, 3, 5.0)]
        await store.append("job-1", 3, [output("x", 1)], outbox=Outbox(work=again))
        assert await store.queued_work("job-1") == [rows[0], again[1], rows[1]]
        assert await store.queued_work("job-2") == []

    async def test_outbox_objects_are_written_with_the_append_or_not_at_all(
        self, store: EventStore
    ) -> None:
        repo = cloud_repository_for(store)
        due = OutboxObject("job_end", "job-1", "t1", 5.0, {"event": "job.failed"})
        await store.append("job-1", 0, [output("x", 0)])
        with pytest.raises(VersionConflict):
            await store.append("job-1", 0, [output("x", 1)], outbox=Outbox(objects=[due]))
        assert await repo.get("job_end", "job-1") is None
        await store.append("job-1", 1, [output("x", 1)], outbox=Outbox(objects=[due]))
        found = await repo.get("job_end", "job-1")
        assert found is not None
        assert (found.tenant, found.created_at, found.data) == ("t1", 5.0, {"event": "job.failed"})
        # One already stored is left alone (an append never fails on it).
        other = OutboxObject("job_end", "job-1", "t2", 6.0, {"event": "job.completed"})
        await store.append("job-1", 2, [output("x", 2)], outbox=Outbox(objects=[other]))
        assert await repo.get("job_end", "job-1") == found

    async def test_empty_append_is_refused(self, store: EventStore) -> None:
        with pytest.raises(ValueError):
            await store.append("s", 0, [])
        assert await store.last_seq() == 0

    async def test_concurrent_appenders_on_distinct_streams(self, store: EventStore) -> None:
        async def writer(w: int) -> None:
            for n in range(100):
                await store.append(f"s{w}", n, [output("a", n, w)])

        await asyncio.gather(*(writer(w) for w in range(10)))
        for w in range(10):
            events = await store.read(f"s{w}")
            assert [e.data["output"]["n"] for e in events] == list(range(100))
        log = await store.tail(0, 5_000)
        assert [e.global_seq for e in log] == list(range(1, 1001))
        assert len(await store.stream_ids()) == 10

    async def test_concurrent_appenders_on_one_stream_with_retry(
        self, store: EventStore
    ) -> None:
        conflicts = 0

        async def writer(w: int) -> None:
            nonlocal conflicts
            for n in range(10):
                while True:
                    version = len(await store.read("shared"))
                    await asyncio.sleep(0)  # let the others race for the same version
                    try:
                        await store.append("shared", version, [output("a", n, w)])
                        break
                    except VersionConflict:
                        conflicts += 1

        await asyncio.gather(*(writer(w) for w in range(10)))
        events = await store.read("shared")
        assert [e.version for e in events] == list(range(1, 101))
        assert sorted((e.data["output"]["writer"], e.data["output"]["n"]) for e in events) == [
            (w, n) for w in range(10) for n in range(10)
        ]
        assert [e.global_seq for e in await store.tail(0)] == list(range(1, 101))
        assert conflicts > 0

    async def test_tail_sees_every_event_once_while_appends_run(
        self, store: EventStore
    ) -> None:
        done = asyncio.Event()
        seen: list[int] = []

        async def writer(w: int) -> None:
            for n in range(50):
                await store.append(f"s{w}", n * 2, [output("a", n, w), output("b", n, w)])

        async def reader() -> None:
            after = 0
            while True:
                finished = done.is_set()
                page = await store.tail(after, limit=37)
                seen.extend(e.global_seq for e in page)
                if page:
                    after = page[-1].global_seq
                elif finished:
                    return
                else:
                    await asyncio.sleep(0)

        tail_task = asyncio.create_task(reader())
        await asyncio.gather(*(writer(w) for w in range(5)))
        done.set()
        await tail_task
        assert seen == list(range(1, 501))

    async def test_values_of_the_first_events_picked_by_path(self, store: EventStore) -> None:
        await record_job(store, "job-a", job_batches("job-a"))
        await store.append("bare", 0, [output("x", 7), output("x", 8)])
        paths = [["output", "n"], ["output"], ["step"], ["no", "such"], ["job_id"]]
        found = await store.first_event_values(["job-a", "bare", "missing", "bare"], paths)
        assert found["bare"] == [7, {"n": 7, "writer": 0}, "x", None, None]
        created = (await store.read("job-a"))[0].data
        assert found["job-a"] == [None, None, None, None, "job-a"]
        assert sorted(found) == ["bare", "job-a"]
        one = await store.first_event_values(["job-a"], [["plan"]])
        assert one == {"job-a": [created["plan"]]}
        assert await store.first_event_values([], paths) == {}

    async def test_events_of_given_types_across_streams_in_global_order(
        self, store: EventStore
    ) -> None:
        await store.append("s1", 0, [output("a", 1)])
        await store.append("s2", 0, [ev.StepSkipped(ts=1.0, step="b", reason="r")])
        await store.append("s1", 1, [ev.StepSkipped(ts=2.0, step="c", reason="r"),
                                     output("a", 2)])
        await store.append("s3", 0, [ev.StepSkipped(ts=3.0, step="d", reason="r")])
        found = await store.events_of_types(["s1", "s2", "nope"], ["StepSkipped", "Other"])
        assert [(e.stream_id, e.version, e.type) for e in found] == [
            ("s2", 1, "StepSkipped"), ("s1", 2, "StepSkipped")]
        assert [e.global_seq for e in found] == sorted(e.global_seq for e in found)
        assert found[1] == (await store.read("s1"))[1]
        both = await store.events_of_types(["s1"], ["StepOutput", "StepSkipped"])
        assert [e.version for e in both] == [1, 2, 3]
        assert await store.events_of_types([], ["StepSkipped"]) == []
        assert await store.events_of_types(["s1"], []) == []

    async def test_stream_ids_in_order_of_first_event(self, store: EventStore) -> None:
        await store.append("b", 0, [output("a", 1)])
        await store.append("a", 0, [output("a", 2)])
        await store.append("b", 1, [output("a", 3)])
        await store.append("c", 0, [output("a", 4)])
        assert await store.stream_ids() == ["b", "a", "c"]

    # --- projections -----------------------------------------------------------------

    async def test_shards_split_the_log_by_stream_in_global_order(
        self, store: EventStore
    ) -> None:
        # Streams ending in many characters (one outside ASCII), interleaved in the log.
        streams = [f"job-{c}" for c in "0123456789abcdefé"] + ["ops/default"]
        for n in range(3):
            for stream in streams:
                await store.append(stream, n, [output("a", n)])
        everything = await store.tail(0, 10_000)
        for count in (1, 2, 3, 16):
            gathered: list[RecordedEvent] = []
            for index in range(count):
                shard = Shard(index, count)
                whole = await store.tail_shard(0, 10_000, shard)
                assert whole == [e for e in everything if shard.holds(e.stream_id)]
                # Paged with small limits (windows with none of the shard's events, on
                # PostgreSQL): the same events, no page over the limit.
                for limit in (1, 4):
                    paged: list[RecordedEvent] = []
                    after = 0
                    while page := await store.tail_shard(after, limit, shard):
                        assert len(page) <= limit
                        paged.extend(page)
                        after = page[-1].global_seq
                    assert paged == whole
                gathered.extend(whole)
            assert sorted(e.global_seq for e in gathered) == [e.global_seq for e in everything]
        # Every stream's events are in one shard; with two shards both hold some.
        assert {Shard(0, 2).holds(s) for s in streams} == {True, False}

    async def test_a_rebuild_by_shards_writes_the_rows_of_a_whole_rebuild(
        self, store: EventStore
    ) -> None:
        await self._jobs(store)
        whole = await snapshot(store)
        await store.reset_projections()
        assert await snapshot(store) == {}
        events = 0
        for index in range(3):
            stats = await rebuild(store, shard=Shard(index, 3), page_size=4, flush_jobs=1)
            events += stats.events
        assert await snapshot(store) == whole
        assert events == await store.last_seq()
        rows, total = await store.list_jobs(JobFilter(limit=10_000, workspace="ops"))
        assert total == len(rows) == 2

    async def _jobs(self, store: EventStore) -> dict[str, JobState]:
        """Six jobs across workspaces, tasks, sources and states (j6 only created)."""
        specs: dict[str, dict[str, Any]] = {
            "j1": {"created_at": 100.0, "workspace": "default", "task": "build"},
            "j2": {"created_at": 200.0, "workspace": "ops", "task": "deploy",
                   "finish": "failed"},
            "j3": {"created_at": 300.0, "workspace": "default", "task": "deploy",
                   "finish": None, "source_type": "cron"},
            "j4": {"created_at": 300.0, "workspace": "default", "task": "build",
                   "parent": "j1", "source_type": "task"},
            "j5": {"created_at": 400.0, "workspace": "ops", "task": "build", "loop": True},
        }
        states: dict[str, JobState] = {}
        for job_id, spec in specs.items():
            states[job_id], _ = await record_job(store, job_id, job_batches(job_id, **spec))
        states["j6"], _ = await record_job(
            store, "j6", job_batches("j6", created_at=500.0)[:1]
        )
        return states

    async def test_projection_rows_written_with_appends(self, store: EventStore) -> None:
        states = await self._jobs(store)
        for job_id, state in states.items():
            job = await store.get_job(job_id)
            assert job == job_row(state)
            assert await store.get_steps(job_id) == step_rows(state)
        j5 = [s.step_name for s in await store.get_steps("j5")]
        assert j5 == ["fetch", "compile", "test", "test[0]", "test[1]"]
        j2 = await store.get_job("j2")
        assert j2 is not None and j2.status == "failed" and j2.error == "step test failed"
        j1 = await store.get_job("j1")
        assert j1 is not None and j1.output == {"test": {"step": "test", "ok": True}}
        assert j1.input == {"who": "world", "n": 3}
        assert await store.get_job("nope") is None
        assert await store.get_steps("nope") == []

    async def test_job_detail_equals_the_separate_reads(self, store: EventStore) -> None:
        await self._jobs(store)
        await record_job(store, "j7", job_batches("j7", created_at=600.0, parent="j1",
                                                  finish=None))
        for job_id in ("j1", "j2", "j3", "j5", "j6"):
            detail = await store.job_detail(job_id, {"JobCreated", "JobFailed", "StepFailed"})
            assert detail is not None
            assert detail.job == await store.get_job(job_id)
            assert detail.steps == await store.get_steps(job_id)
            assert detail.events == [r for r in await store.read(job_id)
                                     if r.type in ("JobCreated", "JobFailed", "StepFailed")]
        j1 = await store.job_detail("j1", ())
        assert j1 is not None and j1.children == ["j4", "j7"] and j1.events == []
        j2 = await store.job_detail("j2", {"StepFailed"})
        assert j2 is not None and [r.type for r in j2.events] == ["StepFailed"]
        assert j2.events[0].data["step"] == "test" and j2.children == []
        assert await store.job_detail("nope", {"JobCreated"}) is None

    async def test_list_jobs_newest_first_with_filters_and_paging(
        self, store: EventStore
    ) -> None:
        await self._jobs(store)

        async def ids(**where: Any) -> tuple[list[str], int]:
            rows, total = await store.list_jobs(JobFilter(**where))
            return [r.job_id for r in rows], total

        assert await ids() == (["j6", "j5", "j4", "j3", "j2", "j1"], 6)
        assert await ids(workspace="ops") == (["j5", "j2"], 2)
        assert await ids(task_name="deploy") == (["j3", "j2"], 2)
        assert await ids(status=("completed",)) == (["j5", "j4", "j1"], 3)
        assert await ids(status=("running", "pending")) == (["j6", "j3"], 2)
        assert await ids(source_type="cron") == (["j3"], 1)
        assert await ids(parent_job_id="j1") == (["j4"], 1)
        assert await ids(since=300.0) == (["j6", "j5", "j4", "j3"], 4)
        assert await ids(workspace="default", task_name="build") == (["j6", "j4", "j1"], 3)
        assert await ids(limit=2) == (["j6", "j5"], 6)
        assert await ids(limit=2, offset=2) == (["j4", "j3"], 6)
        assert await ids(limit=2, offset=6) == ([], 6)
        assert await ids(workspace="none") == ([], 0)

    async def test_list_total_equals_the_real_count_under_every_filter(
        self, store: EventStore
    ) -> None:
        # The total may come from counters kept beside the jobs; under each filter it must
        # equal the number of matching rows after creates, status changes and a rebuild.
        filters: list[dict[str, Any]] = [
            {}, {"workspace": "default"}, {"workspace": "ops"}, {"task_name": "deploy"},
            {"source_type": "cron"}, {"status": ("running",)},
            {"status": ("completed", "failed")}, {"workspace": "ops", "task_name": "build"},
            {"workspace": "default", "status": ("pending", "running")},
            {"workspace": "default", "task_name": "build", "source_type": "api",
             "status": ("completed",)},
            {"since": 300.0}, {"parent_job_id": "j1"}, {"workspace": "nowhere"},
        ]

        async def check(expected_jobs: int) -> None:
            everything, _ = await store.list_jobs(JobFilter(limit=10_000))
            assert len(everything) == expected_jobs
            for where in filters:
                rows, total = await store.list_jobs(JobFilter(limit=10_000, **where))
                assert total == len(rows), where
                _, paged_total = await store.list_jobs(JobFilter(limit=1, offset=1, **where))
                assert paged_total == total, where

        states = await self._jobs(store)
        await check(6)
        # j6 moves from pending through running to completed; j3 (running) fails.
        for batch in job_batches("j6", created_at=500.0)[1:]:
            states["j6"], _ = await record_job(store, "j6", [batch], state=states["j6"])
            await check(6)
        await record_job(store, "j3", job_batches("j3", created_at=300.0, task="deploy",
                                                  source_type="cron", finish="failed")[-1:],
                         state=states["j3"])
        rows, total = await store.list_jobs(JobFilter(status=("failed",)))
        assert (sorted(r.job_id for r in rows), total) == (["j2", "j3"], 2)
        await check(6)
        await rebuild(store, page_size=5, flush_jobs=2)
        await check(6)
        await store.reset_projections()
        await check(0)
        await rebuild(store)
        await check(6)

    async def test_active_job_ids(self, store: EventStore) -> None:
        await self._jobs(store)
        assert sorted(await store.active_job_ids()) == ["j3", "j6"]

    async def test_idempotency_key_names_the_first_stream(self, store: EventStore) -> None:
        await record_job(store, "first", job_batches("first")[:1], idempotency=("api", "k1"))
        before = await snapshot(store)
        with pytest.raises(DuplicateKey) as caught:
            await record_job(store, "second", job_batches("second")[:1],
                             idempotency=("api", "k1"))
        assert caught.value.job_id == "first"
        assert (caught.value.scope, caught.value.key) == ("api", "k1")
        assert await store.read("second") == []
        assert await store.get_job("second") is None
        assert await snapshot(store) == before
        assert await store.find_key("api", "k1") == "first"
        assert await store.find_key("api", "k2") is None
        # The same key in another scope is another key.
        await record_job(store, "third", job_batches("third")[:1], idempotency=("cron", "k1"))
        assert await store.find_key("cron", "k1") == "third"

    async def test_rebuild_equals_incremental_projections(self, store: EventStore) -> None:
        await self._jobs(store)
        incremental = await snapshot(store)
        stats = await rebuild(store, page_size=7, flush_jobs=2)
        assert await snapshot(store) == incremental
        assert stats.events == await store.last_seq()
        assert stats.jobs == 6
        assert sorted(await store.active_job_ids()) == ["j3", "j6"]

    async def test_rebuild_of_many_interleaved_jobs_across_pages(
        self, store: EventStore
    ) -> None:
        # Run 200 jobs' decisions round-robin, so each page of the rebuild holds pieces
        # of many streams and flushes happen while later pages are read.
        jobs = {f"job-{i:03d}": job_batches(f"job-{i:03d}", created_at=float(i),
                                            finish=("completed", "failed", None)[i % 3])
                for i in range(200)}
        states: dict[str, JobState] = {}
        for round_ in range(max(len(b) for b in jobs.values())):
            for job_id, batches in jobs.items():
                if round_ < len(batches):
                    states[job_id], _ = await record_job(
                        store, job_id, [batches[round_]], state=states.get(job_id)
                    )
        incremental = await snapshot(store)
        assert len(incremental) == 200
        stats = await rebuild(store, page_size=300, flush_jobs=40)
        assert await snapshot(store) == incremental
        assert (stats.events, stats.jobs) == (await store.last_seq(), 200)

    async def test_reset_and_write_projections(self, store: EventStore) -> None:
        await self._jobs(store)
        await store.reset_projections()
        assert await store.list_jobs(JobFilter()) == ([], 0)
        assert await store.get_steps("j1") == []
        assert await store.active_job_ids() == []
        # The log itself is untouched.
        assert len(await store.read("j1")) > 0

    async def test_rebuild_rejects_a_corrupt_stream(self, store: EventStore) -> None:
        await store.append("bad", 0, [ev.JobStarted(ts=1.0)])
        with pytest.raises(StreamCorrupt, match="bad"):
            await rebuild(store)

    # --- rate-limit windows (engine.store.ratewindows) --------------------------------

    durable = False
    """The store keeps its data in a database that a second store object can open
    (`DurableStoreContract` says so)."""

    async def test_rate_window_slides_per_key(self, store: EventStore) -> None:
        windows = rate_windows(store)
        assert await windows.reserve("k", 60.0, 2, 0.0) is None
        assert await windows.reserve("k", 60.0, 2, 10.0) is None
        # The third admission waits until the first one leaves the window.
        assert await windows.reserve("k", 60.0, 2, 20.0) == 60.0
        assert await windows.reserve("k", 60.0, 2, 59.9) == 60.0
        assert await windows.reserve("k", 60.0, 2, 60.0) is None
        assert await windows.reserve("k", 60.0, 2, 61.0) == 70.0
        assert await windows.reserve("other", 60.0, 1, 61.0) is None

    async def test_concurrent_reservations_never_exceed_the_limit(
            self, store: EventStore) -> None:
        windows = rate_windows(store)
        got = await asyncio.gather(*(windows.reserve("k", 60.0, 3, 100.0 + i / 100)
                                     for i in range(12)))
        assert sum(1 for until in got if until is None) == 3

    # --- concurrency slots (engine.store.slots) ---------------------------------------

    async def test_slots_are_taken_and_freed_with_appends(self, store: EventStore) -> None:
        g = group_key("ws", "sync", "acme")
        take = Outbox(take_slots=[SlotClaim(g, "j1", 1)])
        await store.append("j1", 0, [output("a", 1)], outbox=take)
        assert await held_by(store, g) == ["j1"]
        # The second job over the limit: nothing of its append is written.
        with pytest.raises(SlotTaken) as taken:
            await store.append("j2", 0, [output("a", 2)],
                               outbox=Outbox(take_slots=[SlotClaim(g, "j2", 1)]))
        assert taken.value.holders == ("j1",)
        assert await store.read("j2") == []
        # Another key of the same task has its own slot; a retake by the holder is fine.
        await store.append("j3", 0, [output("a", 3)], outbox=Outbox(
            take_slots=[SlotClaim(group_key("ws", "sync", "other"), "j3", 1)]))
        await store.append("j1", 1, [output("a", 4)], outbox=take)
        # The end of j1 frees its slot in the same append; then j2 can take it.
        await store.append("j1", 2, [output("a", 5)], outbox=Outbox(free_slots=["j1"]))
        assert await held_by(store, g) == []
        await store.append("j2", 0, [output("a", 6)],
                           outbox=Outbox(take_slots=[SlotClaim(g, "j2", 1)]))
        assert await held_by(store, g) == ["j2"]

    async def test_concurrent_takers_never_exceed_the_limit(self, store: EventStore) -> None:
        g = group_key("ws", "sync", "")

        async def start(n: int) -> bool:
            try:
                await store.append(f"j{n}", 0, [output("a", n)],
                                   outbox=Outbox(take_slots=[SlotClaim(g, f"j{n}", 2)]))
            except SlotTaken:
                return False
            return True

        started = await asyncio.gather(*(start(n) for n in range(10)))
        assert sum(started) == 2
        assert len(await held_by(store, g)) == 2

    async def test_restore_derives_slots_from_the_running_jobs(
            self, store: EventStore) -> None:
        states = await self._jobs(store)
        running = sorted(j for j, s in states.items() if s.status.value == "running")
        ended = sorted(j for j, s in states.items() if s.terminal)
        assert running and ended
        g = group_key("ws", "t", "")
        # A stale row of an ended job goes; running jobs get theirs back.
        await store.append(ended[0], states[ended[0]].version, [output("x", 1)],
                           outbox=Outbox(take_slots=[SlotClaim(g, ended[0], 99)]))
        await restore_slots(store, [(g, j) for j in running + ended])
        assert await held_by(store, g) == running

    # --- errors ----------------------------------------------------------------------

    async def test_closed_store_is_unavailable(self, store: EventStore) -> None:
        await store.append("s", 0, [output("a", 1)])
        await store.close()
        with pytest.raises(StoreUnavailable):
            await store.append("s", 1, [output("a", 2)])
        with pytest.raises(StoreUnavailable):
            await store.read("s")
        with pytest.raises(StoreUnavailable):
            await store.list_jobs(JobFilter())

    # --- cloud objects (engine.store.cloud) ------------------------------------------

    async def _two_repos(self, store: EventStore, tmp_path: Path
                         ) -> tuple[CloudRepository, CloudRepository, EventStore | None]:
        """Two repositories on the store's database (as on two servers); the memory store
        has one process, so both are the same."""
        if not self.durable:
            repo = cloud_repository_for(store)
            return repo, repo, None
        other = await self.create_store(tmp_path)
        await other.open()
        return cloud_repository_for(store), cloud_repository_for(other), other

    async def test_cloud_modify_never_loses_a_concurrent_change(
            self, store: EventStore, tmp_path: Path) -> None:
        a, b, other = await self._two_repos(store, tmp_path)
        try:
            await a.insert(CloudObject("schedule", "s1", "t1", 1.0, 1.0,
                                       {"enabled": True, "fires": 0, "edits": 0}))
            # A reads, B changes the object, A's write over what it read is refused.
            stale = await a.get("schedule", "s1")
            assert stale is not None
            await b.modify("schedule", "s1", lambda o: o.changed(2.0, enabled=False))
            assert not await a.swap(stale.changed(3.0, fires=1))
            # A's read-change-write reads again and keeps B's field.
            done = await a.modify("schedule", "s1", lambda o: o.changed(3.0, fires=1))
            assert done is not None and done.data == {"enabled": False, "fires": 1,
                                                      "edits": 0}
            # Interleaved increments from both sides: none is lost.
            await asyncio.gather(
                *(a.modify("schedule", "s1", lambda o: o.changed(4.0, fires=o.data["fires"] + 1))
                  for _ in range(15)),
                *(b.modify("schedule", "s1", lambda o: o.changed(4.0, edits=o.data["edits"] + 1))
                  for _ in range(15)))
            final = await b.get("schedule", "s1")
            assert final is not None
            assert final.data == {"enabled": False, "fires": 16, "edits": 15}
            assert final.version == 32
            # A change returning None writes nothing; an unknown object gives None.
            assert await a.modify("schedule", "s1", lambda o: None) == final
            assert await a.modify("schedule", "nope", lambda o: o) is None
            # `merge` of a stale copy sets only its fields over the stored ones.
            merged = await a.merge(stale, 5.0, note="x")
            assert merged.data == {"enabled": False, "fires": 16, "edits": 15, "note": "x"}
            assert await b.get("schedule", "s1") == merged
        finally:
            if other is not None:
                await other.close()

    async def test_cloud_page_filters_on_json_fields(self, store: EventStore) -> None:
        repo = cloud_repository_for(store)
        for n in range(120):
            await repo.insert(CloudObject(
                "delivery", f"d{n:04d}", "t1" if n % 10 else "t2", 1.0, 1.0,
                {"job_id": f"j{n % 4}", "webhook_id": None if n % 3 == 0 else f"w{n % 2}"}))
        found = await repo.page("delivery", "t1", limit=1000, where={"job_id": "j1"})
        expected = [f"d{n:04d}" for n in range(119, -1, -1) if n % 4 == 1 and n % 10]
        assert [o.id for o in found] == expected
        both = await repo.page("delivery", "t1", limit=1000,
                               where={"job_id": "j1", "webhook_id": "w1"})
        assert [o.id for o in both] == [f"d{n:04d}" for n in range(119, -1, -1)
                                        if n % 4 == 1 and n % 10 and n % 3]
        # Paging keeps its meaning: newest first, below the cursor, at most `limit`.
        first = await repo.page("delivery", "t1", limit=5, where={"job_id": "j1"})
        rest = await repo.page("delivery", "t1", limit=1000, before=first[-1].id,
                               where={"job_id": "j1"})
        assert [o.id for o in first + rest] == expected
        everyone = await repo.page("delivery", None, limit=1000, where={"job_id": "j2"})
        assert len(everyone) == 30
        with pytest.raises(ValueError):
            await repo.page("delivery", "t1", where={"url": "x"})

    async def test_cloud_jobs_page_filters_on_the_engine_status(
            self, store: EventStore) -> None:
        await self._jobs(store)  # j1, j4, j5 completed; j2 failed; j3 running; j6 pending
        repo = cloud_repository_for(store)
        for job_id in ("j1", "j2", "j3", "j4", "j5", "j6"):
            await repo.insert(CloudObject("job", job_id, "t2" if job_id == "j5" else "t1",
                                          1.0, 1.0, {"workflow": "w"}))
        # Newer cloud jobs without an engine job (or of other statuses) come first.
        for n in range(150):
            await repo.insert(CloudObject("job", f"k{n:04d}", "t1", 1.0, 1.0, {}))

        async def ids(*statuses: str, before: str | None = None, limit: int = 100
                      ) -> list[str]:
            found = await repo.jobs_page("t1", statuses, before=before, limit=limit)
            return [o.id for o in found]

        assert await ids("completed") == ["j4", "j1"]
        assert await ids("failed", "cancelled") == ["j2"]
        assert await ids("running") == ["j3"]
        assert await ids("pending") == ["j6"]
        assert await ids("skipped") == []
        assert await ids("completed", limit=1) == ["j4"]
        assert await ids("completed", before="j4") == ["j1"]
        assert [o.id for o in await repo.jobs_page("t2", ["completed"])] == ["j5"]


class DurableStoreContract:
    """What only a store kept in a database that a second store object can open does
    (SQLite, PostgreSQL); mixed into their `EventStoreContract` classes, first."""

    durable = True

    async def create_store(self, tmp_path: Path) -> EventStore:
        raise NotImplementedError

    async def test_rate_windows_are_shared_and_survive_a_restart(
            self, store: EventStore, tmp_path: Path) -> None:
        assert await rate_windows(store).reserve("k", 60.0, 1, 0.0) is None
        # A second store on the same database (another replica, or after a restart).
        other = await self.create_store(tmp_path)
        await other.open()
        try:
            assert await rate_windows(other).reserve("k", 60.0, 1, 30.0) == 60.0
            assert await rate_windows(other).reserve("k", 60.0, 1, 61.0) is None
        finally:
            await other.close()
        assert await rate_windows(store).reserve("k", 60.0, 1, 62.0) == 121.0
