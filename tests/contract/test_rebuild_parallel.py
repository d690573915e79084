"""`rebuild_url` with helper processes: the streams are shared among processes by a hash of
their id, and the rows they write together equal the incremental ones (SQLite, PostgreSQL)."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from store_contract import snapshot
from store_streams import job_batches, record_job

from engine.core import events as ev
from engine.core.state import JobState, StreamCorrupt
from engine.store.factory import open_store
from engine.store.rebuild import rebuild_url


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    pg_url: str = request.getfixturevalue("pg_url")
    return pg_url


def share(stream: str, parts: int = 2) -> int:
    """The share of the helper processes a stream falls in (as `rebuild_url` splits them)."""
    return zlib.crc32(stream.encode()) % parts


async def test_parallel_rebuild_equals_the_incremental_projections(url: str) -> None:
    store = open_store(url)
    await store.open()
    try:
        # Round-robin, so every page holds pieces of streams of both shares.
        jobs = {f"job-{i:02d}": job_batches(f"job-{i:02d}", created_at=float(i),
                                            finish=("completed", "failed", None)[i % 3],
                                            loop=i % 4 == 0)
                for i in range(40)}
        states: dict[str, JobState] = {}
        for round_ in range(max(len(b) for b in jobs.values())):
            for job_id, batches in jobs.items():
                if round_ < len(batches):
                    states[job_id], _ = await record_job(
                        store, job_id, [batches[round_]], state=states.get(job_id))
        assert {share(job_id) for job_id in jobs} == {0, 1}
        incremental = await snapshot(store)
        last = await store.last_seq()
    finally:
        await store.close()

    stats = await rebuild_url(url, workers=2, parallel_min=0, page_size=50, flush_jobs=5)
    assert (stats.events, stats.jobs) == (last, 40)
    store = open_store(url)
    await store.open()
    try:
        assert await snapshot(store) == incremental
    finally:
        await store.close()


async def test_parallel_rebuild_reports_a_corrupt_stream_of_a_helper(url: str) -> None:
    bad = next(f"bad-{i}" for i in range(100) if share(f"bad-{i}") == 1)
    store = open_store(url)
    await store.open()
    try:
        await record_job(store, "fine", job_batches("fine"))
        await store.append(bad, 0, [ev.JobStarted(ts=1.0)])
    finally:
        await store.close()
    with pytest.raises(StreamCorrupt, match=bad):
        await rebuild_url(url, workers=2, parallel_min=0)
