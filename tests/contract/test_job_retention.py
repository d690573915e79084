"""Job retention (`retention.job_days`) against every store backend.

Old terminal jobs are deleted whole (events, rows, idempotency keys, work-queue rows,
logs, artifacts); active jobs, parents of an active child and recent jobs stay, and the
job list total stays exact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from store_streams import job_batches, record_job

from engine.core import events as ev
from engine.logs.model import LogLine
from engine.logs.store import JsonlLogStore, LogStore
from engine.retention import DAY, JobRetention
from engine.store.base import EventStore, JobFilter, Outbox, OutboxObject
from engine.store.cloud import CloudObject, cloud_repository_for
from engine.store.memory import MemoryStore
from engine.store.sqlite import SqliteStore
from engine.store.work import WorkItem

NOW = 100 * DAY  # the sweep's clock; jobs below end on day 0 or day 99.9


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest,
                  tmp_path: Path) -> AsyncIterator[tuple[EventStore, LogStore]]:
    store: EventStore
    logs: LogStore
    if request.param == "postgres":
        from engine.logs.pgstore import PostgresLogStore
        from engine.store.postgres import PostgresStore

        url = request.getfixturevalue("pg_url")
        store = PostgresStore(url)
        await store.open()
        logs = PostgresLogStore(store.pool, url=url)
        await logs.open()
    else:
        store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "p.db")
        await store.open()
        logs = JsonlLogStore(tmp_path / "logs")
    try:
        yield store, logs
    finally:
        await logs.close()
        await store.close()


def work(job_id: str) -> WorkItem:
    return WorkItem(job_id=job_id, step="fetch", attempt=1, priority=0, ready_at=1.0)


async def test_sweep_deletes_old_terminal_jobs_whole(
    backend: tuple[EventStore, LogStore], tmp_path: Path
) -> None:
    store, logs = backend
    artifacts = tmp_path / "artifacts"
    specs: dict[str, dict[str, Any]] = {
        "old-done": {"created_at": 1_000.0},
        "old-failed": {"created_at": 1_100.0, "workspace": "ops", "finish": "failed"},
        "old-child": {"created_at": 1_150.0, "parent": "old-done", "source_type": "task"},
        "old-parent": {"created_at": 1_200.0},
        "new-child": {"created_at": 1_250.0, "parent": "old-parent", "finish": None,
                      "source_type": "task"},
        "old-running": {"created_at": 1_300.0, "finish": None},
        "recent": {"created_at": NOW - 0.1 * DAY},
    }
    for job_id, spec in specs.items():
        await record_job(store, job_id, job_batches(job_id, **spec),
                         idempotency=("api", f"key-{job_id}"))
        await logs.append(job_id, [LogLine(ts=1.0, stream="stdout", step="fetch",
                                           line=f"hello from {job_id}")])
        (artifacts / job_id / "fetch").mkdir(parents=True)
        (artifacts / job_id / "fetch" / "out.txt").write_text(job_id)
        if job_id == "old-done":  # a leftover work-queue row of an old job goes with it
            await store.append(job_id, len(await store.read(job_id)),
                               [ev.StepOutput(ts=1_010.0, step="fetch", output=1)],
                               outbox=Outbox(work=[work(job_id)], objects=[
                                   OutboxObject("job_end", job_id, "", 1_010.0)]))
    kept = {"old-parent", "new-child", "old-running", "recent"}
    # Stored objects of a job (SQLite, PostgreSQL; the memory repository is per caller).
    repo = None if isinstance(store, MemoryStore) else cloud_repository_for(store)
    if repo is not None:
        for job_id in ("old-done", "recent"):
            await repo.insert(CloudObject("job", job_id, "acme", 1.0, 1.0,
                                          {"deployment_id": "d1", "workflow": "w"}))
            await repo.insert(CloudObject("delivery", f"dl-{job_id}", "acme", 1.0, 1.0,
                                          {"job_id": job_id, "event": "job.completed"}))
            await repo.insert(CloudObject("outbox", f"dl-{job_id}", "acme", 1.0, 1.0))
        await repo.insert(CloudObject("credential", "old-done-cred", "acme", 1.0, 1.0,
                                      {"job_id": "unrelated"}))
    before = {job_id: (await store.get_job(job_id), await store.read(job_id),
                       await store.get_steps(job_id)) for job_id in kept}
    last_seq = await store.last_seq()

    retention = JobRetention(store, logs, artifacts, job_days=30, batch=2, now=lambda: NOW)
    deleted = await retention.sweep()

    assert sorted(deleted) == ["old-child", "old-done", "old-failed"]
    for job_id in deleted:
        assert await store.get_job(job_id) is None
        assert await store.read(job_id) == []
        assert await store.get_steps(job_id) == []
        assert await store.find_key("api", f"key-{job_id}") is None
        assert await store.queued_work(job_id) == []
        assert await logs.count(job_id) == 0
        assert await logs.read(job_id) == []
        assert not (artifacts / job_id).exists()
    if isinstance(logs, JsonlLogStore):
        assert not logs.path("old-done").exists()
    for job_id in kept:
        assert (await store.get_job(job_id), await store.read(job_id),
                await store.get_steps(job_id)) == before[job_id]
        assert await store.find_key("api", f"key-{job_id}") == job_id
        assert await logs.count(job_id) == 1
        assert (artifacts / job_id / "fetch" / "out.txt").read_text() == job_id
    if repo is not None:
        for kind, obj_id, there in (("job", "old-done", False), ("delivery", "dl-old-done", False),
                                    ("outbox", "dl-old-done", False), ("job", "recent", True),
                                    ("delivery", "dl-recent", True), ("outbox", "dl-recent", True),
                                    ("credential", "old-done-cred", True)):
            assert (await repo.get(kind, obj_id) is not None) is there, (kind, obj_id)
    if repo is None:
        assert not isinstance(store, MemoryStore) or ("job_end", "old-done") not in store.objects
    else:
        assert await repo.get("job_end", "old-done") is None
    tailed = await store.tail(0, limit=10_000)
    assert {e.stream_id for e in tailed} == kept
    assert await store.last_seq() == last_seq
    # The job list and its total (counters on PostgreSQL) match what is left.
    for where in ({}, {"workspace": "default"}, {"workspace": "ops"},
                  {"status": ("completed",)}, {"status": ("running", "pending")},
                  {"source_type": "task"}):
        rows, total = await store.list_jobs(JobFilter(limit=100, **where))
        assert total == len(rows), where
        assert {r.job_id for r in rows} <= kept, where
    rows, total = await store.list_jobs(JobFilter(limit=100))
    assert ({r.job_id for r in rows}, total) == (kept, 4)
    # A new append after the sweep still gets a fresh global_seq.
    result = await store.append("later", 0, [ev.StepOutput(ts=NOW, step="a", output=1)])
    assert result.last_seq == last_seq + 1
    # Nothing more to delete; once the child ends and ages, the parent goes too.
    assert await retention.sweep() == []
    assert await JobRetention(store, logs, artifacts, job_days=0).sweep() == []
    assert await store.get_job("recent") is not None


async def test_disabled_retention_keeps_everything(
    backend: tuple[EventStore, LogStore], tmp_path: Path
) -> None:
    store, logs = backend
    await record_job(store, "ancient", job_batches("ancient", created_at=1.0))
    await record_job(store, "last", job_batches("last", created_at=2.0))
    retention = JobRetention(store, logs, tmp_path / "artifacts", job_days=0,
                             now=lambda: NOW)
    assert await retention.sweep() == []
    retention.start()  # disabled: no background task either
    await retention.stop()
    assert await store.get_job("ancient") is not None
    assert (await store.list_jobs(JobFilter()))[1] == 2


async def test_global_seq_is_never_reused_after_a_sweep(
    backend: tuple[EventStore, LogStore], tmp_path: Path
) -> None:
    # The only (old) job holds the latest event: on PostgreSQL, where the next seq is the
    # highest plus one, it stays until a newer event exists; elsewhere it goes at once.
    store, logs = backend
    await record_job(store, "only", job_batches("only", created_at=1_000.0))
    last = await store.last_seq()
    retention = JobRetention(store, logs, tmp_path / "artifacts", job_days=30,
                             now=lambda: NOW)
    first = await retention.sweep()
    assert first in ([], ["only"])
    result = await store.append("next", 0, [ev.StepOutput(ts=NOW, step="a", output=1)])
    assert result.last_seq == last + 1
    assert [e.global_seq for e in await store.tail(last)] == [last + 1]
    assert set(first + await retention.sweep()) == {"only"}
    assert await store.get_job("only") is None
