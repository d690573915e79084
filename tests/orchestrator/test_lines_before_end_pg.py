"""On PostgreSQL a step's log lines are stored before its end is: while the lines' insert
is held up (another transaction holds the log counters), the step is not recorded
completed; once the insert goes through, the step ends and its lines are all there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from composition_support import runtime, workspace

from engine.core.state import JobStatus

WORKFLOW = """
tasks:
  say:
    flow:
      first:
        type: shell
        interpreter: sh
        script: "echo one; echo two"
      second:
        type: shell
        interpreter: sh
        script: "echo three"
        depends_on: [first]
"""


async def test_a_step_ends_only_after_its_lines_are_stored(tmp_path: Path, pg_url: str) -> None:
    ws = workspace(tmp_path, WORKFLOW)
    async with runtime(tmp_path, ws, db_url=pg_url) as rt:
        blocker = await asyncpg.connect(pg_url)
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE log_counters IN EXCLUSIVE MODE")
            job_id = await rt.orchestrator.create_job(ws.name, "say", {}, source_type="user")
            await asyncio.sleep(1.5)  # `first` has long exited; its lines wait for the lock
            steps = {s.step_name: s.status for s in await rt.store.get_steps(job_id)}
            assert steps["first"] != "completed", steps
            assert steps["second"] == "pending", steps
            await tx.rollback()
        finally:
            await blocker.close()
        state = await rt.orchestrator.wait(job_id, timeout=30)
        assert state.status is JobStatus.COMPLETED
        lines = [(line.step, line.line) for line in await rt.logs.read(job_id)
                 if line.step != "_server"]
        assert lines == [("first", "one"), ("first", "two"), ("second", "three")]
