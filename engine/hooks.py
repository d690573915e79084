"""Hooks: `on_success`, `on_error`, `on_cancel`, `on_suspended` (DESIGN §2, docs/hooks.md).

When a job ends (or a step of it suspends for approval) the hooks of its plan (the
task's, then the workspace's) each start a job with `source_type="hook"`: a hook naming
an `action` runs it as a one-step job, a hook naming a `task` runs that task. The hook's
`input` is rendered with `hook.*` (see `hook_context`) and `secret.*` in scope.

Guarantees:
- A hook job never fires hooks of its own.
- With a task-level `retry`, `on_error` fires only after the last attempt.
- Each hook fires at most once per job (and per suspended step): its job is created under
  the idempotency key `hook:<job>:<hook>`, then `HookFired` is recorded in the original
  job's stream. After a restart, `catch_up` fires the hooks that recently ended jobs are
  missing (the idempotency key makes a repeat return the same hook job).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.artifacts import list_artifacts
from engine.compiler.plan import to_retry
from engine.compiler.templating import build_context, render_value
from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.plan import Plan, PlanStep
from engine.core.state import JobState, JobStatus, StepStatus
from engine.errors import Conflict, NotFound, PartiturError
from engine.views import iso

if TYPE_CHECKING:
    from engine.orchestrator import Orchestrator

log = logging.getLogger("partitur.hooks")

HOOK_SOURCE = "hook"
_KIND_OF = {
    JobStatus.COMPLETED: "on_success",
    JobStatus.FAILED: "on_error",
    JobStatus.CANCELLED: "on_cancel",
}
_ENDS = (ev.JobCompleted, ev.JobFailed, ev.JobCancelled)


def hook_context(state: JobState, artifacts_root: Path | None = None) -> dict[str, Any]:
    """The `hook` object templates of a hook see."""
    duration = None
    if state.started_at is not None and state.completed_at is not None:
        duration = round(state.completed_at - state.started_at, 3)
    failed = [
        {"step_name": s.name, "action_name": state.plan_step(s.name).action_name,
         "error_message": s.error,
         "continue_on_failure": state.plan_step(s.name).continue_on_failure}
        for s in state.steps.values() if s.status is StepStatus.FAILED
    ]
    artifacts: list[dict[str, Any]] = []
    if artifacts_root is not None:
        artifacts = [a.to_dict() for a in list_artifacts(artifacts_root, state.job_id)]
    return {
        "workspace": state.workspace,
        "task_name": state.task,
        "job_id": state.job_id,
        "status": state.status.value,
        "is_success": state.status is JobStatus.COMPLETED,
        "error_message": state.error,
        "source_type": state.source_type,
        "source_id": state.source_id,
        "started_at": iso(state.started_at),
        "completed_at": iso(state.completed_at),
        "duration_secs": duration,
        "failed_steps": failed,
        "artifacts": artifacts,
    }


class Hooks:
    """Fires the hooks of jobs that end or suspend (a listener of the orchestrator)."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orch = orchestrator

    def on_events(self, state: JobState, events: Sequence[ev.Event]) -> None:
        if state.source_type == HOOK_SOURCE:
            return
        if state.terminal and any(isinstance(e, _ENDS) for e in events):
            self.orch.spawn(self.fire_end(state))
        for event in events:
            if isinstance(event, ev.StepSuspended):
                self.orch.spawn(self.fire(state, "on_suspended", step=event.step))

    async def fire_end(self, state: JobState) -> None:
        """Fire the hooks of a job's end (none while a task-level retry follows)."""
        kind = _KIND_OF.get(state.status)
        if kind is None or state.source_type == HOOK_SOURCE or self.orch.will_retry(state):
            return
        await self.fire(state, kind)

    async def fire(self, state: JobState, kind: str, *, step: str | None = None) -> None:
        """Start the job of every `kind` hook not fired yet and record `HookFired`."""
        specs = state.plan.hooks.get(kind) or []
        if not specs:
            return
        context = hook_context(state, self.orch.artifacts_root)
        if step is not None:
            context = {**context, "step": step, "message": state.steps[step].message}
        for index, spec in enumerate(specs):
            name = f"{kind}[{index}]" + (f":{step}" if step else "")
            if name in state.hooks_fired:
                continue
            try:
                hook_job = await self._start(state, name, spec, context)
            except PartiturError as exc:
                log.warning("hook %s of job %s did not start: %s", name, state.job_id,
                            exc.message)
                hook_job = ""
            try:
                await self.orch.command(state.job_id, cmd.RecordHook(hook=name, job_id=hook_job))
            except (Conflict, NotFound) as exc:
                log.info("HookFired %s of job %s not recorded: %s", name, state.job_id, exc)

    async def _start(self, state: JobState, name: str, spec: Mapping[str, Any],
                     context: Mapping[str, Any]) -> str:
        secrets = self.orch.secrets_of(state)
        values = render_value(dict(spec.get("input") or {}),
                              build_context(input={}, secret=secrets, hook=context),
                              where=f"task {state.task}, hook {name}")
        key = f"hook:{state.job_id}:{name}"
        common: dict[str, Any] = {"source_type": HOOK_SOURCE,
                                  "source_id": f"{state.job_id}/{name}",
                                  "idempotency_key": key, "by": state.created_by}
        if spec.get("task"):
            return await self.orch.create_job(state.workspace, str(spec["task"]),
                                              dict(values), **common)
        action_name = str(spec.get("action"))
        plan = self.action_plan(state, action_name, list(values))
        return await self.orch.create_job(state.workspace, plan.task, dict(values),
                                          adhoc=plan, **common)

    def action_plan(self, state: JobState, action_name: str, names: Sequence[str]) -> Plan:
        """A one-step plan running `action_name` with the hook job's input as its input."""
        loaded = self.orch.workspaces.revision(state.workspace, state.revision)
        action = loaded.spec.actions.get(action_name)
        if action is None:
            raise NotFound(f"hook action {action_name!r} not found in workspace "
                           f"{state.workspace!r}")
        step = PlanStep(
            name=action_name, action_name=action_name, action_type=action.type,
            action=action.model_dump(mode="json"),
            # The rendered values travel as the job input: never rendered a second time.
            input={n: f"<< input[{n!r}] >>" for n in names},
            timeout=action.timeout, retry=to_retry(action.retry), tags=tuple(action.tags),
        )
        return Plan(task=f"hook:{action_name}", steps={action_name: step},
                    timeout=action.timeout)

    async def catch_up(self, state: JobState) -> None:
        """Fire what a job is missing after a restart: the hooks of its end when it ended,
        `on_suspended` for the steps still waiting for approval."""
        if state.source_type == HOOK_SOURCE:
            return
        if state.terminal:
            await self.fire_end(state)
            return
        for step in list(state.steps.values()):
            if step.status is StepStatus.SUSPENDED:
                await self.fire(state, "on_suspended", step=step.name)
