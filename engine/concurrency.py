"""Per-task concurrency: `concurrency: {limit, key, policy: queue|skip|cancel_previous}`.

Jobs of one task (per rendered `key`, when given) form a group; at most `limit` of them
run at a time. A new job over the limit is, by policy:
- `queue`: recorded `pending` (`JobQueued`) and started (`JobStarted`) when a job of its
  group ends, highest priority first, then oldest first;
- `skip`: recorded `skipped` and never run;
- `cancel_previous`: queued, and the running jobs of its group are cancelled.

The slots themselves are kept in the store (`engine.store.slots`): the append that
records a job's `JobStarted` takes a slot of its group and the one that records its end
frees it, in the same transaction, so every replica on one database counts the same
slots. This process first decides from the jobs it holds in memory (under one lock per
group); when the store finds every slot held — by a job of another replica — the job is
queued (or skipped) instead. A replica that sees another one end a job tries its own
queued jobs again (`engine.replicas`). Which queued job gets a freed slot is decided per
replica: priority order holds among the jobs one replica holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.compiler.templating import build_context, render_value
from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.state import JobState, JobStatus
from engine.errors import Conflict, NotFound, PartiturError
from engine.model import ConcurrencySpec
from engine.store.base import Outbox
from engine.store.slots import SlotClaim, group_key, held_by, restore

if TYPE_CHECKING:
    from engine.orchestrator import Orchestrator

log = logging.getLogger("partitur.concurrency")

Group = tuple[str, str, str]  # workspace, task, rendered key ("" without one)
_ENDS = (ev.JobCompleted, ev.JobFailed, ev.JobCancelled, ev.JobSkipped)


@dataclass(frozen=True, slots=True)
class Admission:
    """What a new job of a limited task does: `run`, `queue` or `skip`."""

    action: str
    reason: str | None = None
    cancel: tuple[str, ...] = ()

    def event(self, now: float) -> ev.Event:
        """The event recording a `queue` or `skip` admission."""
        reason = self.reason or self.action
        if self.action == "skip":
            return ev.JobSkipped(ts=now, reason=reason)
        return ev.JobQueued(ts=now, reason=reason)


def group_of(workspace: str, task: str, spec: ConcurrencySpec,
             job_input: Any) -> Group:
    """The group of a job: its task and its rendered `key`."""
    key = ""
    if spec.key is not None:
        try:
            key = str(render_value(spec.key, build_context(input=job_input),
                                   where=f"task {task}, concurrency.key"))
        except PartiturError:
            key = spec.key
    return workspace, task, key


class Concurrency:
    """Admits, queues and releases jobs of tasks that have a concurrency limit."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orch = orchestrator
        self._locks: dict[Group, asyncio.Lock] = {}
        self._groups: dict[str, tuple[Group, ConcurrencySpec]] = {}

    def lock(self, group: Group) -> asyncio.Lock:
        return self._locks.setdefault(group, asyncio.Lock())

    def spec_of(self, state: JobState) -> tuple[Group, ConcurrencySpec] | None:
        """The group and limit of a job, or None when its task has none."""
        known = self._groups.get(state.job_id)
        if known is not None:
            return known
        try:
            loaded = self.orch.workspaces.revision(state.workspace, state.revision)
        except (NotFound, PartiturError):
            return None
        task = loaded.spec.tasks.get(state.task)
        if task is None or task.concurrency is None:
            return None
        found = group_of(state.workspace, state.task, task.concurrency, state.input), \
            task.concurrency
        self._groups[state.job_id] = found
        return found

    def running(self, group: Group) -> list[JobState]:
        """The running jobs of a group (started, not ended), in this process."""
        out = []
        for state in self.orch.active_states():
            if state.status is JobStatus.RUNNING and not state.terminal:
                found = self.spec_of(state)
                if found is not None and found[0] == group:
                    out.append(state)
        return out

    def queued(self, group: Group) -> list[JobState]:
        """The jobs of a group waiting for a slot, in the order they will start."""
        out = [
            s for s in self.orch.active_states()
            if s.queued and not s.terminal and (f := self.spec_of(s)) is not None
            and f[0] == group
        ]
        out.sort(key=lambda s: (s.priority, s.created_at, s.job_id))
        return out

    async def holders(self, state: JobState) -> list[str]:
        """The jobs holding the slots a queued job waits for, on whichever replica they
        run (read from the store)."""
        found = self.spec_of(state)
        if found is None:
            return []
        held = await held_by(self.orch.store, group_key(*found[0]))
        return [job for job in held if job != state.job_id]

    def admit(self, group: Group, spec: ConcurrencySpec) -> Admission:
        """What a new job of `group` does now (call under `lock(group)`)."""
        running = self.running(group)
        waiting = self.queued(group)
        if len(running) < spec.limit and not waiting:
            return Admission("run")
        if spec.policy == "skip":
            return Admission("skip", f"concurrency limit {spec.limit} of task {group[1]} "
                                     f"reached ({len(running)} running)")
        reason = f"waiting for a slot: concurrency limit {spec.limit} of task {group[1]}"
        if spec.policy == "cancel_previous":
            return Admission("queue", reason, tuple(s.job_id for s in running + waiting))
        return Admission("queue", reason)

    async def superseded(self, group: Group, spec: ConcurrencySpec, admission: Admission,
                         job_id: str) -> tuple[str, ...]:
        """The jobs a new `cancel_previous` job cancels: those of this process the
        admission named, and those holding the group's slots on any replica."""
        if spec.policy != "cancel_previous" or admission.action != "queue":
            return admission.cancel
        held = await held_by(self.orch.store, group_key(*group))
        return tuple(dict.fromkeys([*admission.cancel, *(j for j in held if j != job_id)]))

    def taken(self, group: Group, spec: ConcurrencySpec) -> Admission:
        """What a new job does when the store finds every slot of its group held."""
        if spec.policy == "skip":
            return Admission("skip", f"concurrency limit {spec.limit} of task {group[1]} "
                                     "reached")
        return Admission("queue", f"waiting for a slot: concurrency limit {spec.limit} "
                                  f"of task {group[1]}")

    def outbox(self, state: JobState, events: Sequence[ev.Event]) -> Outbox | None:
        """Outbox source: a starting job takes its slot, an ending one frees it."""
        ends = any(isinstance(e, _ENDS) for e in events)
        starts = any(isinstance(e, ev.JobStarted) for e in events)
        if not (ends or starts):
            return None
        found = self.spec_of(state)
        if found is None:
            return None
        if ends:
            return Outbox(free_slots=(state.job_id,))
        (workspace, task, key), spec = found
        return Outbox(take_slots=(SlotClaim(group_key(workspace, task, key), state.job_id,
                                            spec.limit),))

    def remember(self, job_id: str, group: Group, spec: ConcurrencySpec) -> None:
        self._groups[job_id] = (group, spec)

    def on_events(self, state: JobState, events: Sequence[ev.Event]) -> None:
        """Listener: a job of a limited task ended, so a queued one may start."""
        if not any(isinstance(e, _ENDS) for e in events):
            return
        found = self.spec_of(state)
        self._groups.pop(state.job_id, None)
        if found is not None:
            self.orch.spawn(self.release(*found))

    async def release(self, group: Group, spec: ConcurrencySpec) -> None:
        """Start queued jobs of `group` while there are free slots (none while its
        workspace or task is paused: see `engine.opspause`)."""
        if (await self.orch.ops.state(group[0])).reason(group[1]) is not None:
            return
        async with self.lock(group):
            free = spec.limit - len(self.running(group))
            for state in self.queued(group)[: max(0, free)]:
                try:
                    await self.orch.command(state.job_id, cmd.Start())
                except (Conflict, NotFound) as exc:
                    log.info("queued job %s not started: %s", state.job_id, exc)

    async def restore(self) -> None:
        """Re-derive the store's slots from the jobs (after a start): the running jobs of
        limited tasks hold theirs, jobs that ended hold none."""
        running = [
            (group_key(*found[0]), state.job_id) for state in self.orch.active_states()
            if state.status is JobStatus.RUNNING and not state.terminal
            and (found := self.spec_of(state)) is not None
        ]
        await restore(self.orch.store, running)

    async def release_all(self) -> None:
        """Start what can start in every group (after a restart, or when another replica
        ended a job)."""
        groups: dict[Group, ConcurrencySpec] = {}
        for state in self.orch.active_states():
            if state.queued and not state.terminal and (found := self.spec_of(state)) is not None:
                groups[found[0]] = found[1]
        for group, spec in groups.items():
            await self.release(group, spec)
