"""What a restart catches up for jobs that ended just before it (task retries missed by a
crash), and what it does not read: the whole streams of ended jobs with nothing to catch
up, or of a task's earlier jobs when its next job looks for the task's state."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from composition_support import count_reads, runtime, workspace

from engine.core import events as ev
from engine.core.plan import Plan, PlanStep, Retry
from engine.core.state import JobStatus
from engine.orchestrator import _END_DUTY_PATHS
from engine.store.base import JobFilter, value_at

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


async def test_the_first_job_after_a_restart_finds_the_task_state_without_reading_streams(
    tmp_path: Path, db_url: str
) -> None:
    ws = workspace(tmp_path, YAML + """
  counter:
    flow:
      count:
        type: shell
        input:
          previous: "<< state.n if state else 0 >>"
        script: |
          echo "STATE: {\\"n\\": $(( << input.previous >> + 1 ))}"
""")
    earlier = []
    async with runtime(tmp_path, ws, db_url=db_url) as rt:
        for task in ("counter", "counter", "plain"):
            earlier.append(await rt.orchestrator.create_job("ws", task, {}))
            assert (await rt.orchestrator.wait(earlier[-1], 10)).status is JobStatus.COMPLETED
    async with runtime(tmp_path, ws, db_url=db_url) as rt:
        asked = count_reads(rt.store)
        job_id = await rt.orchestrator.create_job("ws", "counter", {})
        assert not set(asked) & set(earlier)
        assert (await rt.orchestrator.wait(job_id, 10)).status is JobStatus.COMPLETED
        states = await rt.orchestrator.task_states.history("ws", "counter")
        assert [s.state for s in states] == [{"n": 3}, {"n": 2}, {"n": 1}]


def test_the_catch_up_reads_job_created_where_its_fields_are_stored() -> None:
    hooks = {"on_error": [{"action": "record"}]}
    plan = Plan(task="t", steps={"a": PlanStep(name="a", action_name="a", action_type="shell",
                                               action={}, input={}, depends_on=())},
                retry=Retry(max_attempts=3), hooks=hooks)
    created = ev.JobCreated(ts=1.0, job_id="j", workspace="w", revision="r", task="t",
                            input={}, plan=plan.to_dict(), task_attempt=2)
    _, version, data = ev.encode(created)
    assert version == 1  # a new schema needs new paths (or an upcast in the query)
    stored = orjson.loads(orjson.dumps(data))
    assert [value_at(stored, path) for path in _END_DUTY_PATHS] == [hooks, 3, 2]
