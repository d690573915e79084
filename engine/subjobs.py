"""The `task` action: a step that runs another task as a child job (DESIGN §2).

The orchestrator hands a ready `task` step here instead of to a dispatcher, so waiting
for a child never holds an executor slot. The step is claimed (worker `orchestrator`),
its input rendered, and the child job created with `source_type="task"`,
`source_id="<parent>/<step>"`, a parent link and `depth + 1` (at most `MAX_DEPTH`); the
parent records `ChildJobStarted`. When the child ends, its outcome is reported to the
parent step: the child's output completes it, a failed or skipped child fails it. A
cancelled parent cancels its children. Everything is driven by events, so a restart
needs no waiting task: `resume` settles what ended while the server was down.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.clock import new_token
from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.state import JobState, JobStatus, StepStatus
from engine.errors import Conflict, NotFound, PartiturError
from engine.stepprep import prepare

if TYPE_CHECKING:
    from engine.orchestrator import Orchestrator

log = logging.getLogger("partitur.subjobs")

MAX_DEPTH = 10
WORKER_ID = "orchestrator"
_ENDS = (ev.JobCompleted, ev.JobFailed, ev.JobCancelled, ev.JobSkipped)


class SubJobs:
    """Starts child jobs for `task` steps and reports their end to the parent."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orch = orchestrator

    # --- starting ----------------------------------------------------------------------

    async def start(self, job_id: str, step: str, attempt: int) -> None:
        """Claim the ready `task` step and start its child job."""
        try:
            state = await self.orch.command(job_id, cmd.Claim(
                step=step, attempt=attempt, worker_id=WORKER_ID, lease=new_token(12)))
        except (Conflict, NotFound):
            return  # cancelled meanwhile
        await self._launch(state, step, attempt)

    async def _launch(self, state: JobState, step: str, attempt: int) -> None:
        job_id = state.job_id
        if state.depth + 1 > MAX_DEPTH:
            await self._report(job_id, cmd.Fail(
                step=step, attempt=attempt,
                error=f"sub-job nesting is capped at depth {MAX_DEPTH}: job {job_id} is at "
                      f"depth {state.depth} and cannot start another child job"))
            return
        try:
            task, child_input = self._child_request(state, step)
            child_id = await self.orch.create_job(
                state.workspace, task, child_input, source_type="task",
                source_id=f"{job_id}/{step}", parent=job_id, parent_step=step,
                depth=state.depth + 1, by=state.created_by,
                idempotency_key=f"child:{job_id}:{step}:{attempt}",
            )
        except PartiturError as exc:
            kind = "render" if exc.code == "render_error" else "error"
            await self._report(job_id, cmd.Fail(
                step=step, attempt=attempt, kind=kind,
                error=f"cannot start the child job: {exc.message}"))
            return
        await self._report(job_id, cmd.StartChild(step=step, attempt=attempt,
                                                  child_job_id=child_id))
        # A child can end before its parent recorded it (a skipped child, say).
        await self.settle(await self.orch.get_state(child_id))

    def _child_request(self, state: JobState, step: str) -> tuple[str, dict[str, Any]]:
        loaded = self.orch.workspaces.revision(state.workspace, state.revision)
        run = prepare(
            state, step, real_input=self.orch.real_renderer(state).input(state, step),
            secrets=self.orch.secrets_of(state), workdir=Path(loaded.path),
            artifacts_dir=Path(os.devnull),
        )
        task = run.action.get("task")
        if not isinstance(task, str) or not task:
            raise NotFound(f"step {step} names no task to run")
        return task, dict(run.input)

    # --- ending ------------------------------------------------------------------------

    def on_events(self, state: JobState, events: Sequence[ev.Event]) -> None:
        """Listener: cancel children of a cancelled job; report a child's end."""
        if state.children and any(isinstance(e, ev.JobCancelRequested) for e in events):
            for child in state.children:
                self.orch.spawn(self._cancel_child(child, state.job_id))
        if state.parent and state.terminal and any(isinstance(e, _ENDS) for e in events):
            self.orch.spawn(self.settle(state))

    async def _cancel_child(self, child_id: str, parent_id: str) -> None:
        try:
            child = await self.orch.get_state(child_id)
            if not child.terminal:
                await self.orch.command(child_id, cmd.Cancel(
                    by=f"job {parent_id}", reason=f"parent job {parent_id} was cancelled"))
        except (Conflict, NotFound) as exc:
            log.info("child %s of %s not cancelled: %s", child_id, parent_id, exc)

    async def settle(self, child: JobState) -> None:
        """Report an ended child to the parent step waiting for it (if one still is)."""
        if not child.terminal or child.parent is None or child.parent_step is None:
            return
        if self.orch.will_retry(child):
            return  # the retry job reports instead
        try:
            parent = await self.orch.get_state(child.parent)
        except NotFound:
            return
        step = parent.steps.get(child.parent_step)
        if step is None or step.status is not StepStatus.RUNNING \
                or step.child_job_id != child.job_id:
            return
        name, attempt = step.name, step.attempt
        command: cmd.Command
        if child.status is JobStatus.COMPLETED:
            command = cmd.Complete(step=name, attempt=attempt, output=dict(child.output or {}))
        elif child.status is JobStatus.CANCELLED and parent.cancel_requested:
            command = cmd.CancelStep(step=name, attempt=attempt, reason="job cancelled")
        else:
            what = {JobStatus.CANCELLED: "was cancelled", JobStatus.SKIPPED: "was skipped"}.get(
                child.status, "failed")
            command = cmd.Fail(step=name, attempt=attempt,
                               error=f"child job {child.job_id} {what}: {child.error}")
        await self._report(parent.job_id, command)

    async def adopt_retry(self, child: JobState, retry_id: str) -> None:
        """A failed child is retried as job `retry_id`: the parent step waits for that."""
        if child.parent is None or child.parent_step is None:
            return
        try:
            parent = await self.orch.get_state(child.parent)
        except NotFound:
            return
        step = parent.steps.get(child.parent_step)
        if step is not None and step.status is StepStatus.RUNNING \
                and step.child_job_id == child.job_id:
            await self._report(parent.job_id, cmd.StartChild(
                step=step.name, attempt=step.attempt, child_job_id=retry_id))

    # --- restart -----------------------------------------------------------------------

    async def resume(self, state: JobState) -> None:
        """After a restart: `task` steps keep waiting; what ended meanwhile is settled."""
        for step in list(state.steps.values()):
            if step.status is not StepStatus.RUNNING or step.items is not None:
                continue
            if state.plan_step(step.name).action_type != "task":
                continue
            if step.child_job_id is None:
                # Claimed but the child was not recorded: starting again is idempotent.
                await self._launch(state, step.name, step.attempt)
                continue
            try:
                child = await self.orch.get_state(step.child_job_id)
            except NotFound:
                await self._launch(state, step.name, step.attempt)
                continue
            await self.settle(child)

    async def _report(self, job_id: str, command: cmd.Command) -> None:
        try:
            await self.orch.command(job_id, command)
        except (Conflict, NotFound) as exc:
            log.info("%s for job %s not recorded: %s", type(command).__name__, job_id, exc)
