"""Per-task concurrency, task-level retries, reruns, task state and approvals, through the
real orchestrator and executor."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from composition_support import runtime, workspace

from engine.core import commands as cmd
from engine.core.state import JobStatus, StepStatus
from engine.store.base import JobFilter
from engine.taskstate import TaskStates

YAML = """
tasks:
  one-at-a-time:
    concurrency: {limit: 1, policy: queue}
    input:
      tag: {type: string, default: x}
    flow:
      work:
        type: shell
        input: {tag: "<< input.tag >>"}
        script: sleep 0.3; echo << input.tag >>
  skip-when-busy:
    concurrency: {limit: 1, policy: skip}
    flow:
      nap: {type: shell, script: sleep 0.5}
  per-key:
    concurrency: {limit: 1, key: "<< input.env >>", policy: queue}
    input:
      env: {type: string, required: true}
      seconds: {type: number, default: 0.4}
    flow:
      nap:
        type: shell
        input: {seconds: "<< input.seconds >>"}
        script: sleep << input.seconds >>
  retried:
    retry: {max_attempts: 3}
    flow:
      try:
        type: shell
        script: |
          echo attempt $PARTITUR_JOB_ID
          test -e "$MARKER" && exit 0
          touch "$MARKER"; exit 1
        env: {MARKER: "<< job.workspace >>.marker"}
  counter:
    flow:
      count:
        type: shell
        input:
          previous: "<< state.n if state else 0 >>"
        script: |
          echo "STATE: {\\"n\\": $(( << input.previous >> + 1 ))}"
          echo "OUTPUT: {\\"seen\\": $PARTITUR_STATE}"
  resume:
    flow:
      first:
        type: shell
        script: |
          echo 'OUTPUT: {"v": 1}'
      second:
        depends_on: [first]
        type: shell
        script: |
          test -e go || exit 1
          echo 'OUTPUT: {"v": 2}'
  approve-me:
    flow:
      gate:
        type: approval
        input: {what: "<< input.what >>"}
        message: "ship << input.what >>?"
        timeout: 30s
      after:
        depends_on: [gate]
        type: shell
        input: {by: "<< steps.gate.output.approved_by >>"}
        script: echo approved by << input.by >>
    input:
      what: {type: string, default: it}
  times-out:
    flow:
      gate: {type: approval, message: "quick", timeout: 0.3s}
      after: {depends_on: [gate], type: shell, script: echo never}
"""


async def test_queue_policy_runs_one_job_at_a_time_in_order(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws, concurrency=4) as rt:
        orch = rt.orchestrator
        ids = [await orch.create_job("ws", "one-at-a-time", {"tag": t}) for t in "abc"]
        states = [await orch.get_state(i) for i in ids]
        assert states[0].status is JobStatus.RUNNING
        assert [s.status for s in states[1:]] == [JobStatus.PENDING, JobStatus.PENDING]
        assert all(s.queued for s in states[1:])
        finals = [await orch.wait(i, 20) for i in ids]
        assert [s.status for s in finals] == [JobStatus.COMPLETED] * 3
        # Never two at once: each started after the previous one ended.
        for before, after in itertools.pairwise(finals):
            assert after.started_at is not None and before.completed_at is not None
            assert after.started_at >= before.completed_at
        types = [r.type for r in await rt.store.read(ids[1])]
        assert types[:3] == ["JobCreated", "JobQueued", "JobStarted"]


async def test_skip_policy_records_a_skipped_job(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        first = await rt.orchestrator.create_job("ws", "skip-when-busy", {})
        second = await rt.orchestrator.create_job("ws", "skip-when-busy", {})
        skipped = await rt.orchestrator.get_state(second)
        assert skipped.status is JobStatus.SKIPPED
        assert "concurrency limit 1" in (skipped.error or "")
        assert (await rt.store.get_job(second)).status == "skipped"  # type: ignore[union-attr]
        assert (await rt.orchestrator.wait(first, 10)).status is JobStatus.COMPLETED


async def test_the_limit_applies_per_rendered_key(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        orch = rt.orchestrator
        a = await orch.create_job("ws", "per-key", {"env": "staging"})
        b = await orch.create_job("ws", "per-key", {"env": "production"})
        c = await orch.create_job("ws", "per-key", {"env": "staging"})
        assert (await orch.get_state(a)).status is JobStatus.RUNNING
        assert (await orch.get_state(b)).status is JobStatus.RUNNING
        assert (await orch.get_state(c)).queued
        assert (await orch.wait(c, 10)).status is JobStatus.COMPLETED


async def test_a_queued_job_survives_a_restart_and_starts(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    db = f"sqlite:///{tmp_path / 'p.db'}"
    async with runtime(tmp_path, ws, db_url=db) as rt:
        first = await rt.orchestrator.create_job("ws", "skip-when-busy", {})
        await rt.orchestrator.wait(first, 10)
        a = await rt.orchestrator.create_job("ws", "per-key", {"env": "x"})
        b = await rt.orchestrator.create_job("ws", "per-key", {"env": "x"})
        assert (await rt.orchestrator.get_state(b)).queued
        await rt.orchestrator.command(a, cmd.Cancel(by="test"))
        await rt.orchestrator.wait(a, 10)
        await rt.orchestrator.command(b, cmd.Cancel(by="test"))
        # `c` naps long enough to be running for sure when the server stops.
        c = await rt.orchestrator.create_job("ws", "per-key", {"env": "y", "seconds": 60})
        d = await rt.orchestrator.create_job("ws", "per-key", {"env": "y"})
        assert (await rt.orchestrator.get_state(d)).queued
        for _ in range(200):  # a step that never started would simply run again
            if (await rt.orchestrator.get_state(c)).steps["nap"].status is StepStatus.RUNNING:
                break
            await asyncio.sleep(0.02)
        # Stop while `d` waits for `c`: `c`'s running step is lost with the server.
    async with runtime(tmp_path, ws, db_url=db) as rt:
        assert (await rt.orchestrator.wait(c, 10)).status is JobStatus.FAILED
        assert (await rt.orchestrator.wait(d, 10)).status is JobStatus.COMPLETED
        assert (await rt.orchestrator.get_state(b)).status is JobStatus.CANCELLED


async def test_a_task_retry_is_a_new_job_linked_to_the_failed_one(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        first = await rt.orchestrator.create_job("ws", "retried", {})
        assert (await rt.orchestrator.wait(first, 10)).status is JobStatus.FAILED
        await rt.orchestrator.settle(10)
        rows, total = await rt.store.list_jobs(JobFilter(workspace="ws", task_name="retried"))
        assert total == 2
        second = await rt.orchestrator.get_state(rows[0].job_id)
        assert second.status is JobStatus.COMPLETED
        assert (second.retry_of, second.task_attempt) == (first, 2)
        assert rows[0].retry_of == first


async def test_state_lines_become_the_next_jobs_state(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        seen = []
        for _ in range(3):
            job = await rt.orchestrator.create_job("ws", "counter", {})
            state = await rt.orchestrator.wait(job, 10)
            assert state.status is JobStatus.COMPLETED, state.error
            seen.append(state.steps["count"].output["seen"])
        assert seen == [None, {"n": 1}, {"n": 2}]
        history = await rt.orchestrator.task_states.history("ws", "counter")
        assert [s.state for s in history] == [{"n": 3}, {"n": 2}, {"n": 1}]
    # A new process reads the state from the log.
    async with runtime(tmp_path, ws) as rt:
        assert await rt.orchestrator.task_states.latest("ws", "counter") is None  # memory
    db = f"sqlite:///{tmp_path / 'p.db'}"
    async with runtime(tmp_path, ws, db_url=db) as rt:
        job = await rt.orchestrator.create_job("ws", "counter", {})
        await rt.orchestrator.wait(job, 10)
    async with runtime(tmp_path, ws, db_url=db) as rt:
        assert await rt.orchestrator.task_states.latest("ws", "counter") == {"n": 1}
        job = await rt.orchestrator.create_job("ws", "counter", {})
        state = await rt.orchestrator.wait(job, 10)
        assert state.steps["count"].output == {"seen": {"n": 1}}


async def test_only_the_last_snapshots_of_a_task_state_are_kept(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        states = rt.orchestrator.task_states
        states.keep = 2
        for _ in range(4):
            job = await rt.orchestrator.create_job("ws", "counter", {})
            assert (await rt.orchestrator.wait(job, 10)).status is JobStatus.COMPLETED
        assert [s.state for s in await states.history("ws", "counter")] == [{"n": 4}, {"n": 3}]
        # Read again from the log, the same two.
        fresh = TaskStates(rt.store, keep=2)
        assert [s.state for s in await fresh.history("ws", "counter")] == [{"n": 4}, {"n": 3}]


async def test_rerun_from_a_step_reuses_the_upstream_outputs(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        first = await rt.orchestrator.create_job("ws", "resume", {})
        assert (await rt.orchestrator.wait(first, 10)).status is JobStatus.FAILED
        (ws / "go").touch()
        rt.workspaces.reload("ws")  # the file is part of the workspace's next revision
        second = await rt.orchestrator.rerun(first, from_step="second")
        state = await rt.orchestrator.wait(second, 10)
        assert state.status is JobStatus.COMPLETED
        assert state.steps["first"].reused_from == first
        assert state.steps["second"].output == {"v": 2}
        records = await rt.store.read(second)
        reused = [r for r in records if r.type == "StepCompleted" and r.data.get("reused_from")]
        assert [(r.data["step"], r.data["reused_from"]) for r in reused] == [("first", first)]
        lines = [line.line for line in await rt.logs.read(second)]
        assert f"step first reused the output of job {first}" in lines
        assert not any(line.startswith("step first ready") for line in lines)


async def test_approval_outputs_who_and_when_and_rejection_skips_downstream(
    tmp_path: Path,
) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        orch = rt.orchestrator
        ok = await orch.create_job("ws", "approve-me", {"what": "v2"})
        no = await orch.create_job("ws", "approve-me", {})
        for job in (ok, no):
            for _ in range(100):
                if (await orch.get_state(job)).steps["gate"].status is StepStatus.SUSPENDED:
                    break
                await asyncio.sleep(0.02)
        assert (await orch.get_state(ok)).steps["gate"].message == "ship v2?"
        await orch.command(ok, cmd.Approve(step="gate", by="ada", input={"note": "go"}))
        await orch.command(no, cmd.Reject(step="gate", by="bob", reason="not today"))
        approved = await orch.wait(ok, 10)
        rejected = await orch.wait(no, 10)
        output = approved.steps["gate"].output
        assert output["approved"] is True and output["approved_by"] == "ada"
        assert output["input"] == {"note": "go"} and output["approved_at"] > 0
        assert approved.status is JobStatus.COMPLETED
        assert rejected.status is JobStatus.FAILED
        assert rejected.steps["gate"].error == "rejected: not today"
        assert rejected.steps["after"].status is StepStatus.SKIPPED
        types = {r.type for job in (ok, no) for r in await rt.store.read(job)}
        assert {"StepSuspended", "StepApproved", "StepRejected"} <= types


async def test_an_approval_times_out(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        job = await rt.orchestrator.create_job("ws", "times-out", {})
        state = await rt.orchestrator.wait(job, 10)
        assert state.status is JobStatus.FAILED
        assert state.steps["gate"].error == "approval timed out"
        assert state.steps["gate"].error_kind == "timeout"
        assert state.steps["after"].status is StepStatus.SKIPPED
