"""Pausing a whole workspace or one task: no new job of it starts (issue 13, item 3).

Every pause and resume is an event (`ScopePaused`, `ScopeResumed`, with who did it) in
the workspace's operations stream `ops/<workspace>` of the same event store as the jobs;
`fold_ops` folds a stream into an `OpsState`, which the orchestrator consults when it
creates a job. A job created while its workspace or task is paused is recorded
`pending` (`JobQueued`, the reason naming who paused what) and starts on resume, unless
its creator asked to skip in that case (a trigger with `concurrency: skip`), when it is
recorded `skipped`. Running jobs are not touched: pause one job for that.

The state of each workspace is kept in memory once read; other replicas learn of a
change when they follow the log (`Orchestrator.refresh` of the `ops/` stream).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from engine.concurrency import Group
from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.state import JobState
from engine.errors import Conflict, NotFound, VersionConflict
from engine.model import ConcurrencySpec

if TYPE_CHECKING:
    from engine.orchestrator import Orchestrator

OPS_PREFIX = "ops/"


def ops_stream(workspace: str) -> str:
    """The id of a workspace's operations stream."""
    return OPS_PREFIX + workspace


def is_ops_stream(stream_id: str) -> bool:
    return stream_id.startswith(OPS_PREFIX)


@dataclass(frozen=True, slots=True)
class Hold:
    """Who paused a scope, when, and why."""

    by: str | None
    since: float
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"paused_by": self.by, "paused_at": self.since, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class OpsState:
    """The pauses of one workspace: the workspace itself, and its paused tasks."""

    workspace: str
    version: int = 0
    paused: Hold | None = None
    tasks: Mapping[str, Hold] = field(default_factory=dict)

    def hold(self, task: str) -> tuple[str, Hold] | None:
        """What holds new jobs of `task`: `("workspace", hold)`, `("task", hold)` or None."""
        if self.paused is not None:
            return "workspace", self.paused
        found = self.tasks.get(task)
        return ("task", found) if found is not None else None

    def reason(self, task: str) -> str | None:
        """Why a new job of `task` may not start now, or None."""
        found = self.hold(task)
        if found is None:
            return None
        scope, hold = found
        what = f"workspace {self.workspace}" if scope == "workspace" else f"task {task}"
        by = f" by {hold.by}" if hold.by else ""
        why = f": {hold.reason}" if hold.reason else ""
        return f"{what} paused{by}{why}"


    def view(self, task: str | None = None) -> dict[str, object]:
        """The pause fields the API shows for the workspace (or, with `task`, a task)."""
        if task is None:
            hold = self.paused
            return {"paused": hold is not None, "paused_by": None,
                    **(hold.to_dict() if hold is not None else {}),
                    "paused_tasks": {n: h.to_dict() for n, h in sorted(self.tasks.items())}}
        found = self.hold(task)
        view: dict[str, object] = {"paused": found is not None, "paused_by": None}
        if found is not None:
            view.update(found[1].to_dict(), paused_scope=found[0])
        return view


def evolve_ops(state: OpsState, event: ev.Event) -> OpsState:
    """The state after one event of the stream (pure)."""
    version = state.version + 1
    if isinstance(event, ev.ScopePaused):
        hold = Hold(event.by, event.ts, event.reason)
        if event.task is None:
            return replace(state, version=version, paused=hold)
        return replace(state, version=version, tasks={**state.tasks, event.task: hold})
    if isinstance(event, ev.ScopeResumed):
        if event.task is None:
            return replace(state, version=version, paused=None)
        tasks = {k: v for k, v in state.tasks.items() if k != event.task}
        return replace(state, version=version, tasks=tasks)
    return replace(state, version=version)


def fold_ops(workspace: str, events: Iterable[ev.Event],
             state: OpsState | None = None) -> OpsState:
    current = state or OpsState(workspace)
    for event in events:
        current = evolve_ops(current, event)
    return current


class OpsPauses:
    """Pauses and resumes workspaces and tasks; what the orchestrator asks before a start."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orch = orchestrator
        self._states: dict[str, OpsState] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, workspace: str) -> asyncio.Lock:
        return self._locks.setdefault(workspace, asyncio.Lock())

    async def state(self, workspace: str) -> OpsState:
        """The pauses of a workspace (read from its stream once, then kept)."""
        known = self._states.get(workspace)
        if known is not None:
            return known
        return await self._read(workspace)

    def known(self, workspace: str) -> OpsState:
        """The pauses of a workspace as last read (none if never read)."""
        return self._states.get(workspace) or OpsState(workspace)

    def reason(self, workspace: str, task: str) -> str | None:
        """Why new jobs of `task` are held (from what this process knows), or None."""
        return self.known(workspace).reason(task)

    async def _read(self, workspace: str) -> OpsState:
        known = self._states.get(workspace) or OpsState(workspace)
        records = await self.orch.store.read(ops_stream(workspace), after_version=known.version)
        state = fold_ops(workspace, (r.event() for r in records), known)
        # A read begun before a concurrent pause may finish after it: keep the newer state.
        latest = self._states.get(workspace)
        if latest is not None and latest.version > state.version:
            return latest
        self._states[workspace] = state
        return state

    async def pause(self, workspace: str, task: str | None, *, by: str | None,
                    reason: str | None = None) -> OpsState:
        """Pause a workspace (`task` None) or a task; pausing a paused one changes nothing."""
        def event(state: OpsState, now: float) -> ev.Event | None:
            held = state.paused if task is None else state.tasks.get(task)
            if held is not None:
                return None
            return ev.ScopePaused(ts=now, workspace=workspace, task=task, by=by, reason=reason)

        return await self._decide(workspace, event)

    async def resume(self, workspace: str, task: str | None, *, by: str | None) -> OpsState:
        """Resume a workspace or task; the jobs it held start (as far as nothing else
        holds them: a task resumed in a paused workspace still waits)."""
        def event(state: OpsState, now: float) -> ev.Event | None:
            held = state.paused if task is None else state.tasks.get(task)
            if held is None:
                return None
            return ev.ScopeResumed(ts=now, workspace=workspace, task=task, by=by)

        state = await self._decide(workspace, event)
        await self.release(workspace)
        return state

    async def _decide(self, workspace: str,
                      make: Callable[[OpsState, float], ev.Event | None]) -> OpsState:
        async with self._lock(workspace):
            for _ in range(5):
                state = await self._read(workspace)
                event = make(state, self.orch.clock.now())
                if event is None:
                    return state
                try:
                    await self.orch.store.append(ops_stream(workspace), state.version, [event])
                except VersionConflict:
                    continue  # another replica wrote first: read and decide again
                state = evolve_ops(state, event)
                self._states[workspace] = state
                return state
            raise VersionConflict(f"workspace {workspace}: too many concurrent pauses")

    async def refresh(self, stream_id: str) -> None:
        """Another replica appended to an operations stream: read it, start what it freed."""
        workspace = stream_id[len(OPS_PREFIX):]
        if workspace not in self._states:
            return
        async with self._lock(workspace):
            before = self._states[workspace]
            after = await self._read(workspace)
        if after.version != before.version:
            await self.release(workspace)

    async def release(self, workspace: str) -> None:
        """Start the queued jobs of a workspace that nothing holds any more (oldest,
        highest priority first); jobs of a task with a concurrency limit go through it."""
        orch = self.orch
        state = self.known(workspace)
        waiting = sorted(
            (s for s in orch.active_states()
             if s.workspace == workspace and s.queued and not s.terminal
             and state.reason(s.task) is None),
            key=lambda s: (s.priority, s.created_at, s.job_id))
        groups: dict[Group, ConcurrencySpec] = {}
        for job in waiting:
            found = orch.concurrency.spec_of(job)
            if found is not None:
                groups[found[0]] = found[1]
                continue
            await self._start(job)
        for group, spec in groups.items():
            await orch.concurrency.release(group, spec)

    async def release_all(self) -> None:
        """After a restart: start the queued jobs that no pause holds any more."""
        workspaces = {s.workspace for s in self.orch.active_states() if s.queued}
        for workspace in sorted(workspaces):
            await self.state(workspace)
            await self.release(workspace)

    async def _start(self, job: JobState) -> None:
        try:
            await self.orch.command(job.job_id, cmd.Start())
        except (Conflict, NotFound):
            pass  # cancelled or started meanwhile
