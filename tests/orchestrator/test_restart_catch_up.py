"""What a restart catches up for jobs that ended just before it: task retries missed by a
crash, and no whole-stream reads for the ended jobs that have nothing to catch up."""

from __future__ import annotations

from pathlib import Path

import pytest
from composition_support import runtime, workspace

from engine.core.state import JobStatus
from engine.store.base import EventStore, JobFilter

YAML = """
tasks:
  plain:
    flow:
      one: {type: shell, script: echo fine}
  failing:
    flow:
      one: {type: shell, script: exit 1}
  retried:
    retry: {max_attempts: 2}
    flow:
      try:
        type: shell
        script: |
          test -e "$MARKER" && exit 0
          touch "$MARKER"; exit 1
        env: {MARKER: "<< job.workspace >>.marker"}
"""


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'p.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def count_reads(store: EventStore) -> list[str]:
    """The streams `store.read` is asked for from now on (the real read still runs)."""
    asked: list[str] = []
    real = store.read

    async def read(stream_id: str, after_version: int = 0):  # type: ignore[no-untyped-def]
        asked.append(stream_id)
        return await real(stream_id, after_version)

    store.read = read  # type: ignore[method-assign]
    return asked


async def test_a_task_retry_missed_by_a_crash_starts_after_the_restart(
    tmp_path: Path, db_url: str
) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws, db_url=db_url) as rt:
        # A crash right after the job failed: its retry never started.
        rt.orchestrator._listeners.remove(rt.orchestrator._on_end)
        first = await rt.orchestrator.create_job("ws", "retried", {})
        assert (await rt.orchestrator.wait(first, 10)).status is JobStatus.FAILED
        _, total = await rt.store.list_jobs(JobFilter(task_name="retried"))
        assert total == 1
    for _ in range(2):  # two restarts: one retry
        async with runtime(tmp_path, ws, db_url=db_url) as rt:
            await rt.orchestrator.settle(10)
            rows, total = await rt.store.list_jobs(JobFilter(task_name="retried"))
            assert total == 2
            retry = await rt.orchestrator.wait(rows[0].job_id, 10)
            assert (retry.retry_of, retry.task_attempt) == (first, 2)
            assert retry.status is JobStatus.COMPLETED


async def test_a_restart_reads_no_ended_job_that_has_nothing_to_catch_up(
    tmp_path: Path, db_url: str
) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws, db_url=db_url) as rt:
        ended = [await rt.orchestrator.create_job("ws", task, {})
                 for task in ("plain", "failing", "plain", "failing")]
        for job_id in ended:
            await rt.orchestrator.wait(job_id, 10)
        retried = await rt.orchestrator.create_job("ws", "retried", {})
        assert (await rt.orchestrator.wait(retried, 10)).status is JobStatus.FAILED
        await rt.orchestrator.settle(10)
    async with runtime(tmp_path, ws, db_url=db_url) as rt:
        asked = count_reads(rt.store)
        await rt.orchestrator._catch_up_ended()
        # The failed job whose retry ran is read (it has an attempt left by its plan);
        # the others, finished for good, are not.
        assert asked == [retried]
        _, total = await rt.store.list_jobs(JobFilter(task_name="retried"))
        assert total == 2
