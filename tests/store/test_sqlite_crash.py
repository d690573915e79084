"""kill -9 a process appending to a SQLite store: every acknowledged event survives."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from engine.store.base import JobFilter
from engine.store.rebuild import rebuild
from engine.store.sqlite import SqliteStore

CHILD = Path(__file__).with_name("sqlite_crash_child.py")


async def test_acknowledged_appends_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), str(db),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    acked: dict[str, int] = {}
    assert child.stdout is not None and child.stderr is not None
    try:
        # Read acknowledgements until a fair number of appends went through.
        while sum(acked.values()) < 300:
            line = (await child.stdout.readline()).decode()
            assert line, f"child exited early: {(await child.stderr.read()).decode()}"
            word, job_id, version = line.split()
            assert word == "acked"
            acked[job_id] = int(version)
        # Kill it mid-append, without any chance to clean up.
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.wait_for(child.wait(), timeout=10)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == -signal.SIGKILL

    store = SqliteStore(db)
    await store.open()
    try:
        # Every acknowledged event is there, in a gapless log.
        for acked_id, acked_version in acked.items():
            events = await store.read(acked_id)
            assert len(events) >= acked_version
            assert [e.version for e in events] == list(range(1, len(events) + 1))
        log = await store.tail(0, 1_000_000)
        assert [e.global_seq for e in log] == list(range(1, len(log) + 1))
        # The projections were committed with their events: a rebuild gives the same rows.
        jobs, total = await store.list_jobs(JobFilter(limit=100_000))
        assert total >= len(acked)
        before = {j.job_id: (j, await store.get_steps(j.job_id)) for j in jobs}
        for job_id, (job, _) in before.items():
            assert job.version == len(await store.read(job_id))
        stats = await rebuild(store)
        assert stats.events == len(log)
        jobs_after, _ = await store.list_jobs(JobFilter(limit=100_000))
        after = {j.job_id: (j, await store.get_steps(j.job_id)) for j in jobs_after}
        assert after == before
    finally:
        await store.close()
