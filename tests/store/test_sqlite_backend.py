"""What the SQLite backend does beyond the shared contract: files, migrations, seqs."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from engine.core import events as ev
from engine.core.plan import Plan, PlanStep
from engine.core.projections import JobRow, job_row, step_rows
from engine.core.state import JobState, fold
from engine.errors import ConfigInvalid, StoreUnavailable
from engine.store.base import EventStore, JobFilter, Projection
from engine.store.migrations import load_migrations
from engine.store.rebuild import rebuild
from engine.store.sqlite import SqliteStore

OUTPUT = ev.StepOutput(ts=1.0, step="a", output={"x": [1, 2]})
PLAN = Plan(task="t", steps={"s": PlanStep(name="s", action_name="a", action_type="shell",
                                          action={"script": "true"})})


async def interleaved_jobs(store: EventStore, job_ids: list[str]) -> None:
    """Run jobs' decisions round-robin, each append with its projection rows."""
    states: dict[str, JobState] = {}
    for step in range(4):
        for job_id in job_ids:
            decisions: list[list[ev.Event]] = [
                [ev.JobCreated(ts=1.0, job_id=job_id, workspace="w", revision="r", task="t",
                               input={}, plan=PLAN.to_dict())],
                [ev.JobStarted(ts=2.0), ev.StepReady(ts=2.0, step="s", input={})],
                [ev.StepStarted(ts=3.0, step="s", attempt=1, worker_id="w")],
                [ev.StepCompleted(ts=4.0, step="s"), ev.JobCompleted(ts=4.0)],
            ]
            batch = decisions[step]
            before = states.get(job_id)
            states[job_id] = state = fold(batch, before)
            await store.append(job_id, before.version if before else 0, batch,
                               projection=Projection(job_row(state), step_rows(state)))


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    await store.open()
    await store.append("s", 0, [OUTPUT, OUTPUT], idempotency=("api", "k"))
    await store.close()
    again = SqliteStore(tmp_path / "p.db")
    await again.open()
    try:
        assert [e.version for e in await again.read("s")] == [1, 2]
        assert await again.find_key("api", "k") == "s"
        assert (await again.append("s", 2, [OUTPUT])).last_seq == 3
    finally:
        await again.close()


async def test_migrations_apply_once_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    for _ in range(2):
        store = SqliteStore(path)
        await store.open()
        await store.close()
    with sqlite3.connect(path) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert versions == [m.version for m in load_migrations("sqlite")]
    assert mode == "wal"


async def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
            "VALUES (999, 'future', 'x', 0)"
        )
    conn.close()
    with pytest.raises(StoreUnavailable, match="999"):
        await SqliteStore(path).open()


async def test_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    path.write_bytes(b"this is not a SQLite database, not at all" * 100)
    store = SqliteStore(path)
    with pytest.raises(StoreUnavailable):
        await store.open()
    with pytest.raises(StoreUnavailable):
        await store.read("s")


def test_synchronous_mode_is_checked() -> None:
    with pytest.raises(ConfigInvalid, match="synchronous"):
        SqliteStore(Path("x.db"), synchronous="sometimes")


async def test_full_synchronous_mode_works(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db", synchronous="full")
    await store.open()
    try:
        await store.append("s", 0, [OUTPUT])
        assert await store.last_seq() == 1
    finally:
        await store.close()


def last_seqs(path: Path) -> list[tuple[str, int]]:
    """`(job_id, last_seq)` of every job row, read over a second connection."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT job_id, last_seq FROM jobs ORDER BY job_id").fetchall()
    finally:
        conn.close()


async def test_rebuild_stamps_each_job_with_its_last_seq(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    store = SqliteStore(path)
    await store.open()
    try:
        # Interleave two jobs so their last seqs differ from the log's last seq.
        await interleaved_jobs(store, ["a", "b"])
        incremental = last_seqs(path)
        await rebuild(store)
        assert last_seqs(path) == incremental
        assert incremental[0][1] != incremental[1][1]
        assert (await store.list_jobs(JobFilter()))[1] == 2
    finally:
        await store.close()


async def test_an_append_waits_while_another_connection_writes(tmp_path: Path) -> None:
    """Appends are written on the loop's connection only when the write lock is free at
    once; while another connection holds it, the append waits for it and then lands."""
    import asyncio

    path = tmp_path / "p.db"
    store = SqliteStore(path)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await store.append("s", 0, [OUTPUT])
        other.execute("BEGIN IMMEDIATE")
        pending = asyncio.ensure_future(store.append("s", 1, [OUTPUT, OUTPUT]))
        await asyncio.sleep(0.3)
        assert not pending.done()
        other.execute("COMMIT")
        result = await asyncio.wait_for(pending, 30)
        assert [r.version for r in result.events] == [2, 3]
        assert [e.version for e in await store.read("s")] == [1, 2, 3]
    finally:
        other.close()
        await store.close()


async def test_the_wal_is_checkpointed_while_appends_run_on_the_loop(tmp_path: Path) -> None:
    """The loop's connection never checkpoints itself; the store thread does, so the WAL
    file stops growing instead of holding every append since the start."""
    import asyncio

    from engine.store.sqlite import CHECKPOINT_EVERY

    path = tmp_path / "p.db"
    store = SqliteStore(path)
    await store.open()
    wal = f"{path}-wal"
    sizes = []
    version = 0
    try:
        for _ in range(6):
            for _ in range(CHECKPOINT_EVERY):
                await store.append("s", version, [OUTPUT, OUTPUT, OUTPUT])
                version += 3
            for _ in range(1000):  # until this round's checkpoint has run
                if not store._checkpointing:
                    break
                await asyncio.sleep(0.01)
            sizes.append(os.stat(wal).st_size)
        assert sizes[-1] <= sizes[0] * 2, sizes
        assert await store.last_seq() == version
    finally:
        await store.close()


def _row(job_id: str, workspace: str, status: str) -> JobRow:
    return JobRow(job_id=job_id, workspace=workspace, task_name="build", revision="r1",
                  status=status, source_type="api", source_id=None, parent_job_id=None,
                  input={}, output=None, error=None, created_at=1.0, started_at=None,
                  completed_at=None, priority=0, created_by=None, retry_of=None, version=1)


async def test_the_job_counters_start_from_the_jobs_already_there(tmp_path: Path) -> None:
    # A database from before the counters (migration 9) gets them filled from its jobs.
    path = tmp_path / "p.db"
    store = SqliteStore(path)
    await store.open()
    rows = [_row("a", "ws1", "completed"), _row("b", "ws1", "failed"),
            _row("c", "ws2", "completed")]
    await store.write_projections([Projection(r) for r in rows], last_seq=0)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE job_counts")
        conn.execute("DELETE FROM schema_migrations WHERE version = 9")
    conn.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert (await store.list_jobs(JobFilter()))[1] == 3
        assert (await store.list_jobs(JobFilter(workspace="ws1")))[1] == 2
        assert (await store.list_jobs(JobFilter(status=("completed",))))[1] == 2
        # A status change written twice in one call moves the counters once.
        await store.write_projections(
            [Projection(_row("a", "ws1", "running")), Projection(_row("a", "ws1", "failed"))],
            last_seq=0)
        assert (await store.list_jobs(JobFilter(status=("failed",))))[1] == 2
        assert (await store.list_jobs(JobFilter(status=("completed",))))[1] == 1
        assert (await store.list_jobs(JobFilter()))[1] == 3
    finally:
        await store.close()
