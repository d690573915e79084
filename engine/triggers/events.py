"""Event triggers: start a task when another task's job ends (`type: event`).

`EventTriggers.listener` is registered with `Orchestrator.on_events`; when an appended
batch ends a job, every enabled event trigger of that workspace whose `on.task` and
`on.status` match starts its task. The new job's input offers `job` (the finished job's
summary) and `output` (its output). Each start uses the idempotency key
`event:<trigger>:<job id>`, so a finished job starts a trigger's task at most once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.core import events as ev
from engine.core.state import JobState
from engine.errors import PartiturError
from engine.model import TriggerSpec
from engine.store.codec import through_json
from engine.triggers.common import trigger_input, trigger_key

if TYPE_CHECKING:
    from engine.orchestrator import Orchestrator

log = logging.getLogger("partitur.triggers")

_ENDS = (ev.JobCompleted, ev.JobFailed, ev.JobCancelled)


def job_summary(state: JobState) -> dict[str, Any]:
    """What an event trigger's job learns about the job that ended."""
    return {
        "id": state.job_id, "workspace": state.workspace, "task": state.task,
        "status": state.status.value, "revision": state.revision,
        "source_type": state.source_type, "source_id": state.source_id,
        "error": state.error,
    }


class EventTriggers:
    """Starts the tasks of event triggers when the jobs they listen for end."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self._tasks: set[asyncio.Task[Any]] = set()
        self.enabled = True

    def listener(self, state: JobState, events: Sequence[ev.Event]) -> None:
        """`Orchestrator.on_events` listener: react to a job ending."""
        if not self.enabled or not any(isinstance(e, _ENDS) for e in events):
            return
        try:
            loaded = self.orchestrator.workspaces.get(state.workspace).current
        except PartiturError:
            return
        if loaded is None:
            return
        for name, spec in loaded.spec.triggers.items():
            if _matches(spec, state):
                task = asyncio.ensure_future(self._start(state, name, spec))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _start(self, state: JobState, name: str, spec: TriggerSpec) -> str | None:
        orch = self.orchestrator
        try:
            ws = orch.workspaces.get(state.workspace)
            task = ws.require().spec.tasks[spec.task]
            summary = job_summary(state)
            offered = through_json({"job": summary, "output": state.output})
            raw = trigger_input(spec, task, secrets=ws.secrets, context=offered,
                                offered=offered)
            return await orch.create_job(
                state.workspace, spec.task, raw, source_type="trigger",
                source_id=trigger_key(state.workspace, name), priority=spec.priority,
                idempotency_key=f"event:{name}:{state.job_id}",
                when_paused="skip" if spec.concurrency == "skip" else "queue",
            )
        except Exception:
            log.exception("event trigger %s/%s failed to start a job", state.workspace, name)
            return None

    async def drain(self) -> None:
        """Wait for the jobs being started right now (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        self.enabled = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _matches(spec: TriggerSpec, state: JobState) -> bool:
    return (spec.type == "event" and spec.enabled and spec.on is not None
            and spec.on.task == state.task and state.status.value in spec.on.status)

