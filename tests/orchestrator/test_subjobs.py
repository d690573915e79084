"""`task` steps: child jobs through the real orchestrator and executor, real processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from composition_support import runtime, workspace

from engine.core import commands as cmd
from engine.core.state import JobStatus, StepStatus
from engine.store.base import JobFilter
from engine.subjobs import MAX_DEPTH

YAML = """
tasks:
  child:
    input:
      n: {type: integer, default: 1}
    flow:
      double:
        type: shell
        input: {n: "<< input.n >>"}
        script: |
          v=$(( << input.n >> * 2 ))
          echo 'OUTPUT: {"v":' $v '}'
  parent:
    flow:
      sub:
        type: task
        task: child
        input: {n: 21}
      after:
        depends_on: [sub]
        type: shell
        input: {v: "<< steps.sub.output.double.v >>"}
        script: |
          echo 'OUTPUT: {"got":' << input.v >> '}'
  failing-child:
    flow:
      boom:
        type: shell
        script: echo broken >&2; exit 4
  fails:
    flow:
      sub: {type: task, task: failing-child}
      after: {depends_on: [sub], type: shell, script: echo never}
  slow-child:
    flow:
      nap: {type: shell, script: sleep 30}
  slow-parent:
    flow:
      sub: {type: task, task: slow-child}
  recurse:
    flow:
      again: {type: task, task: recurse}
"""


async def test_child_output_becomes_the_step_output_with_links_both_ways(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    # One executor slot: a task step holding it while its child waits would deadlock.
    async with runtime(tmp_path, ws, concurrency=1) as rt:
        job_id = await rt.orchestrator.create_job("ws", "parent", {})
        state = await rt.orchestrator.wait(job_id, 20)
        assert state.status is JobStatus.COMPLETED, state.error
        assert state.steps["sub"].output == {"double": {"v": 42}}
        assert state.output == {"after": {"got": 42}}
        child_id = state.steps["sub"].child_job_id
        assert child_id is not None and state.children == (child_id,)
        child = await rt.orchestrator.get_state(child_id)
        assert (child.source_type, child.source_id) == ("task", f"{job_id}/sub")
        assert (child.parent, child.parent_step, child.depth) == (job_id, "sub", 1)
        rows, _ = await rt.store.list_jobs(JobFilter(parent_job_id=job_id))
        assert [r.job_id for r in rows] == [child_id]
        steps = {s.step_name: s for s in await rt.store.get_steps(job_id)}
        assert steps["sub"].child_job_id == child_id
        events = [r.type for r in await rt.store.read(job_id)]
        assert "ChildJobStarted" in events


async def test_a_failed_child_fails_the_step_and_skips_downstream(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        job_id = await rt.orchestrator.create_job("ws", "fails", {})
        state = await rt.orchestrator.wait(job_id, 20)
        assert state.status is JobStatus.FAILED
        error = state.steps["sub"].error or ""
        assert "child job" in error and "exit code 4" in error and "broken" in error
        assert state.steps["after"].status is StepStatus.SKIPPED


async def test_cancelling_the_parent_cancels_the_child(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        orch = rt.orchestrator
        job_id = await orch.create_job("ws", "slow-parent", {})
        for _ in range(200):
            state = await orch.get_state(job_id)
            child_id = state.steps["sub"].child_job_id
            if child_id and (await orch.get_state(child_id)).steps["nap"].pid:
                break
            await asyncio.sleep(0.02)
        assert child_id is not None
        await orch.command(job_id, cmd.Cancel(by="test", reason="stop"))
        state = await orch.wait(job_id, 10)
        child = await orch.wait(child_id, 10)
        assert state.status is JobStatus.CANCELLED
        assert state.steps["sub"].status is StepStatus.CANCELLED
        assert child.status is JobStatus.CANCELLED
        assert child.steps["nap"].status is StepStatus.CANCELLED


async def test_nesting_is_capped_at_depth_ten(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        job_id = await rt.orchestrator.create_job("ws", "recurse", {})
        state = await rt.orchestrator.wait(job_id, 30)
        assert state.status is JobStatus.FAILED
        rows, total = await rt.store.list_jobs(JobFilter(task_name="recurse", workspace="ws"))
        assert total == MAX_DEPTH + 1
        last = await rt.orchestrator.get_state(max(rows, key=lambda r: r.created_at).job_id)
        assert last.depth == MAX_DEPTH
        assert f"capped at depth {MAX_DEPTH}" in (last.steps["again"].error or "")
        assert f"capped at depth {MAX_DEPTH}" in (state.error or "")


async def test_a_child_that_cannot_start_fails_the_step_saying_why(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML + """
  bad-input:
    flow:
      sub: {type: task, task: child, input: {n: many}}
""")
    async with runtime(tmp_path, ws) as rt:
        job_id = await rt.orchestrator.create_job("ws", "bad-input", {})
        state = await rt.orchestrator.wait(job_id, 20)
        assert state.status is JobStatus.FAILED
        error = state.steps["sub"].error or ""
        assert error.startswith("cannot start the child job") and "n" in error
        assert state.children == ()


async def test_after_a_restart_the_parent_keeps_waiting_for_its_child(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML + """
  lost-child:
    flow:
      work:
        type: shell
        retry: {max_attempts: 2, on_lost: true}
        script: |
          sleep 0.5
          echo 'OUTPUT: {"attempt":' $PARTITUR_ATTEMPT '}'
  waits:
    flow:
      sub: {type: task, task: lost-child}
""")
    db = f"sqlite:///{tmp_path / 'p.db'}"
    async with runtime(tmp_path, ws, db_url=db) as rt:
        job_id = await rt.orchestrator.create_job("ws", "waits", {})
        child_id = None
        for _ in range(200):
            state = await rt.orchestrator.get_state(job_id)
            child_id = state.steps["sub"].child_job_id
            if child_id and (await rt.orchestrator.get_state(child_id)).steps["work"].pid:
                break
            await asyncio.sleep(0.02)
        assert child_id is not None
    # The server stopped while the child ran; a new one picks both jobs up.
    async with runtime(tmp_path, ws, db_url=db) as rt:
        state = await rt.orchestrator.wait(job_id, 20)
        assert state.status is JobStatus.COMPLETED, state.error
        assert state.steps["sub"].attempt == 1
        assert state.steps["sub"].output == {"work": {"attempt": 2}}
        child = await rt.orchestrator.get_state(child_id)
        assert child.steps["work"].attempt == 2
        types = [r.type for r in await rt.store.read(job_id)]
        assert types.count("StepFailed") == 0
