"""Hooks through the real orchestrator: hook jobs, their context, retries, restarts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from composition_support import runtime, workspace

from engine.core import commands as cmd
from engine.core.state import JobState, JobStatus
from engine.runtime import Runtime
from engine.store.base import JobFilter

YAML = """
actions:
  record:
    type: shell
    input:
      text: {type: string, required: true}
      extra: {type: object, default: {}}
    script: |
      echo HOOK << input.text >>
      echo "OUTPUT: $PARTITUR_INPUT_EXTRA"
  explode:
    type: shell
    script: exit 9
tasks:
  ok:
    flow:
      one: {type: shell, script: echo fine}
    on_success:
      - action: record
        input:
          text: "<< hook.task_name >> << hook.status >> << hook.is_success >>"
          extra: "<< hook >>"
  broken:
    flow:
      good: {type: shell, script: echo ok}
      bad:
        depends_on: [good]
        type: shell
        script: printf '\\x3c\\x3c nope >>\\n' >&2; exit 3
    on_error:
      - action: record
        input:
          text: "task-level"
          extra: "<< hook >>"
  flaky:
    retry: {max_attempts: 2}
    flow:
      bad: {type: shell, script: exit 1}
    on_error:
      - action: record
        input: {text: "attempt failed for good"}
  slow:
    flow:
      nap: {type: shell, script: sleep 30}
    on_cancel:
      - task: ok
  gate:
    flow:
      ask: {type: approval, message: "go?"}
    on_suspended:
      - action: record
        input: {text: "waiting << hook.step >>: << hook.message >>"}
on_error:
  - action: explode
"""


async def _hook_jobs(rt: Runtime, settle: bool = True) -> list[JobState]:
    if settle:
        await rt.orchestrator.settle(20)
    rows, _ = await rt.store.list_jobs(JobFilter(source_type="hook", limit=100))
    return [await rt.orchestrator.get_state(r.job_id) for r in reversed(rows)]


async def test_on_success_runs_the_action_with_the_hook_context(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        job_id = await rt.orchestrator.create_job("ws", "ok", {})
        await rt.orchestrator.wait(job_id, 20)
        hooks = await _hook_jobs(rt)
        assert len(hooks) == 1
        hook = hooks[0]
        assert hook.status is JobStatus.COMPLETED, hook.error
        assert (hook.source_type, hook.source_id) == ("hook", f"{job_id}/on_success[0]")
        lines = [line.line for line in await rt.logs.read(hook.job_id)]
        assert "HOOK ok completed true" in lines
        context = hook.steps["record"].output
        assert set(context) >= {
            "workspace", "task_name", "job_id", "status", "is_success", "error_message",
            "source_type", "source_id", "started_at", "completed_at", "duration_secs",
            "failed_steps", "artifacts"}
        assert context["task_name"] == "ok" and context["source_id"] is None
        assert context["completed_at"].endswith("Z")
        assert context["completed_at"] >= context["started_at"]
        assert context["job_id"] == job_id and context["workspace"] == "ws"
        assert context["failed_steps"] == [] and context["error_message"] is None
        assert context["source_type"] == "api" and context["duration_secs"] >= 0
        assert context["started_at"].endswith("Z") and context["artifacts"] == []
        original = await rt.orchestrator.get_state(job_id)
        assert original.hooks_fired == ("on_success[0]",)
        fired = [r for r in await rt.store.read(job_id) if r.type == "HookFired"]
        assert [dict(r.data) for r in fired] == [{"hook": "on_success[0]",
                                                  "job_id": hook.job_id}]


async def test_task_then_workspace_hooks_and_hook_jobs_fire_no_hooks(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        job_id = await rt.orchestrator.create_job("ws", "broken", {})
        await rt.orchestrator.wait(job_id, 20)
        hooks = await _hook_jobs(rt)
        # The task's hook, then the workspace's; the workspace's fails, and being a
        # hook job, fires no on_error of its own.
        assert [h.task for h in hooks] == ["hook:record", "hook:explode"]
        assert hooks[1].status is JobStatus.FAILED
        context = hooks[0].steps["record"].output
        assert context["status"] == "failed" and context["is_success"] is False
        assert context["failed_steps"] == [{
            "step_name": "bad", "action_name": "bad", "continue_on_failure": False,
            "error_message": context["failed_steps"][0]["error_message"]}]
        # The error text holds `<< nope >>`: it reached the hook as text, not rendered.
        assert "<< nope >>" in context["error_message"]
        state = await rt.orchestrator.get_state(job_id)
        assert state.hooks_fired == ("on_error[0]", "on_error[1]")


async def test_with_a_task_retry_hooks_fire_after_the_last_attempt_only(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        first = await rt.orchestrator.create_job("ws", "flaky", {})
        await rt.orchestrator.wait(first, 20)
        hooks = await _hook_jobs(rt)
        rows, _ = await rt.store.list_jobs(JobFilter(task_name="flaky", workspace="ws"))
        assert len(rows) == 2
        second = await rt.orchestrator.get_state(rows[0].job_id)
        assert (second.retry_of, second.task_attempt) == (first, 2)
        assert second.status is JobStatus.FAILED
        assert (await rt.orchestrator.get_state(first)).hooks_fired == ()
        assert second.hooks_fired == ("on_error[0]", "on_error[1]")
        assert {h.source_id for h in hooks} == {f"{second.job_id}/on_error[0]",
                                                f"{second.job_id}/on_error[1]"}


async def test_on_cancel_can_start_a_task(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        job_id = await rt.orchestrator.create_job("ws", "slow", {})
        await asyncio.sleep(0.2)
        await rt.orchestrator.command(job_id, cmd.Cancel(by="test"))
        await rt.orchestrator.wait(job_id, 10)
        hooks = await _hook_jobs(rt)
        assert [(h.task, h.status) for h in hooks] == [("ok", JobStatus.COMPLETED)]
        # `ok` has an on_success hook, but a hook job fires none.
        assert hooks[0].hooks_fired == ()


async def test_on_suspended_fires_once_per_suspended_step(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        job_id = await rt.orchestrator.create_job("ws", "gate", {})
        hooks = []
        for _ in range(100):
            hooks = await _hook_jobs(rt, settle=False)
            if hooks and hooks[0].terminal:
                break
            await asyncio.sleep(0.05)
        assert len(hooks) == 1
        lines = [line.line for line in await rt.logs.read(hooks[0].job_id)]
        assert "HOOK waiting ask: go?" in lines
        await rt.orchestrator.command(job_id, cmd.Approve(step="ask", by="ada"))
        state = await rt.orchestrator.wait(job_id, 10)
        assert state.status is JobStatus.COMPLETED
        assert state.hooks_fired == ("on_suspended[0]:ask",)
        assert len(await _hook_jobs(rt, settle=False)) == 1


async def test_hooks_missed_by_a_crash_fire_once_after_the_restart(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    db = f"sqlite:///{tmp_path / 'p.db'}"
    async with runtime(tmp_path, ws, db_url=db) as rt:
        # A crash right after the job ended: no hook ever started.
        rt.orchestrator._listeners.remove(rt.orchestrator.hooks.on_events)
        job_id = await rt.orchestrator.create_job("ws", "ok", {})
        await rt.orchestrator.wait(job_id, 20)
        assert await _hook_jobs(rt) == []
    for _ in range(2):  # two restarts: still one hook job
        async with runtime(tmp_path, ws, db_url=db) as rt:
            hooks = await _hook_jobs(rt)
            assert len(hooks) == 1 and hooks[0].status is JobStatus.COMPLETED
            state = await rt.orchestrator.get_state(job_id)
            assert state.hooks_fired == ("on_success[0]",)
    assert json.dumps(hooks[0].steps["record"].output["job_id"]) == json.dumps(job_id)
