"""The orchestrator: load state → decide → append → dispatch (DESIGN §4, §6).

It owns the in-memory state of active jobs (folded from the log only when a job is
loaded), serialises decisions per job, appends each decision's events in one
transaction together with the projection rows, writes the engine's own log notes
(step `_server`), publishes status frames to the live bus, and hands ready steps to a
dispatcher (the embedded executor, or the remote-worker queue). Nothing else writes
events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from engine.clock import Clock, SystemClock, new_job_id
from engine.compiler.inputs import coerce_input, secret_paths
from engine.compiler.plan import compile_task
from engine.compiler.step_render import TemplateStepRenderer
from engine.concurrency import Concurrency, group_of
from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.decide import Env, decide, decide_state, dispatchable, next_wakeup
from engine.core.events import RecordedEvent
from engine.core.plan import Plan, has_end_duties
from engine.core.projections import job_row, job_status, step_rows
from engine.core.state import JobState, JobStatus, StepStatus, evolve, fold
from engine.errors import Conflict, NotFound, VersionConflict
from engine.hooks import Hooks
from engine.logs.bus import LiveBus
from engine.logs.redact import Redactor
from engine.logs.store import LogStore
from engine.logs.writer import JobLogWriter
from engine.masking import JobMasker
from engine.opspause import OpsPauses, is_ops_stream
from engine.store.base import DuplicateKey, EventStore, JobFilter, Outbox, Projection
from engine.store.slots import SlotTaken
from engine.store.work import WorkItem
from engine.subjobs import MAX_DEPTH, SubJobs
from engine.taskstate import TaskStates
from engine.workspaces import WorkspaceRegistry

log = logging.getLogger("partitur.orchestrator")

MASK = "••••••"
__all__ = ["MAX_DEPTH", "ActiveJob", "Dispatcher", "Orchestrator", "OutboxDispatcher"]
# After a restart, jobs that ended this long ago or less get their missing hooks/retries.
CATCH_UP_SECONDS = 24 * 3600
# Where `JobCreated` (schema 1) keeps what `has_end_duties` needs.
_END_DUTY_PATHS = (("plan", "hooks"), ("plan", "retry", "max_attempts"), ("task_attempt",))
_ENDS = (ev.JobCompleted, ev.JobFailed, ev.JobCancelled, ev.JobSkipped)


class Dispatcher(Protocol):
    """Runs ready steps: the embedded executor, or the queue remote workers claim from."""

    def dispatch(self, state: JobState, step: str) -> None:
        """Start (or queue) a ready step; it reports back through `Orchestrator.command`."""

    def cancel(self, job_id: str, step: str) -> None:
        """Stop a running step of a cancelled job (kill its process group)."""

    def owns(self, worker_id: str | None) -> bool:
        """Whether a step claimed by `worker_id` ran in this process (lost on restart)."""


@runtime_checkable
class OutboxDispatcher(Dispatcher, Protocol):
    """A dispatcher whose ready steps are rows written with the events (DESIGN §4 outbox).

    The embedded executor is not one: its steps run in this process and die with it.
    """

    def outbox_for(self, state: JobState, events: Sequence[ev.Event]) -> Sequence[WorkItem]:
        """The queue rows of the steps `events` made ready (`state` is after them); they
        are written in the append's transaction, and `dispatch` still follows."""


@dataclass
class ActiveJob:
    """A job whose state is kept in memory while it is not terminal."""

    state: JobState
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dispatched: set[tuple[str, int]] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None
    writer: JobLogWriter | None = None
    masker: JobMasker | None = None
    # Commands waiting for the next group commit, and the task that commits them.
    queue: list[_Request] = field(default_factory=list)
    committer: asyncio.Future[None] | None = None


@dataclass(slots=True)
class _Request:
    """One `command_many` call waiting for its group commit."""

    command: cmd.Command
    more: Sequence[cmd.Command]
    before: Sequence[cmd.Command]
    future: asyncio.Future[tuple[JobState, list[bool]]]
    after: asyncio.Future[None] | None = None


def _masked(secrets: Mapping[str, Any]) -> dict[str, Any]:
    return {name: MASK for name in secrets}


class Orchestrator:
    """Turns commands into events, keeps active jobs in memory, dispatches ready steps."""

    def __init__(
        self,
        store: EventStore,
        logs: LogStore,
        bus: LiveBus,
        workspaces: WorkspaceRegistry,
        *,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.logs = logs
        self.bus = bus
        self.workspaces = workspaces
        self.clock: Clock = clock or SystemClock()
        self.rand = rand
        self.dispatcher: Dispatcher | None = None
        self._outbox_source: OutboxDispatcher | None = None
        self._outbox_sources: list[Callable[[JobState, Sequence[ev.Event]], Outbox | None]] = []
        self._active: dict[str, ActiveJob] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.task_states = TaskStates(store)
        self.concurrency = Concurrency(self)
        self.ops = OpsPauses(self)
        self.subjobs = SubJobs(self)
        self.hooks = Hooks(self)
        self._listeners: list[Callable[[JobState, Sequence[ev.Event]], None]] = [
            self.task_states.on_events, self.concurrency.on_events, self._on_end,
            self.subjobs.on_events, self.hooks.on_events,
        ]
        self._outbox_sources.append(self.concurrency.outbox)  # slots held in the store

    # --- lifecycle -------------------------------------------------------------------

    def attach(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._outbox_source = (dispatcher if isinstance(dispatcher, OutboxDispatcher)
                               else None)

    def on_events(self, listener: Callable[[JobState, Sequence[ev.Event]], None]) -> None:
        """Call `listener(state, events)` after every append (metrics, hooks, triggers)."""
        self._listeners.append(listener)

    def add_outbox(self, source: Callable[[JobState, Sequence[ev.Event]], Outbox | None]
                   ) -> None:
        """Ask `source(state, events)` (`state` after them, before they are appended) for
        outbox rows to write in the append's transaction (callbacks of ending jobs)."""
        self._outbox_sources.append(source)

    async def recover(self) -> int:
        """Load every non-terminal job after a start; steps this process ran are lost.

        A step whose process ran under a previous incarnation of this process is failed
        with kind `worker_lost` (re-run only where `retry.on_lost` is set), after its
        process group is killed. Returns the number of jobs loaded.
        """
        from engine.runners.process import kill_process_group

        ids = await self.store.active_job_ids()
        for job_id in ids:
            active = await self._load(job_id)
            lost = [
                s for s in active.state.steps.values()
                if s.status == StepStatus.RUNNING and s.items is None
                and active.state.plan_step(s.name).action_type != "task"
            ]
            for step in lost:
                if self.dispatcher is not None and not self.dispatcher.owns(step.worker_id):
                    continue
                if step.pid:
                    kill_process_group(step.pid)
                await self.command(job_id, cmd.Fail(
                    step=step.name, attempt=step.attempt, kind="worker_lost",
                    error="the process running this step was lost (server restarted)",
                ))
            await self.command(job_id, cmd.Tick())
        for job_id in ids:
            # `task` steps keep waiting for their children; what ended meanwhile settles.
            state = await self.get_state(job_id)
            await self.subjobs.resume(state)
            await self.hooks.catch_up(await self.get_state(job_id))
        await self.concurrency.restore()
        await self.concurrency.release_all()
        await self.ops.release_all()
        await self._catch_up_ended()
        return len(ids)

    async def _catch_up_ended(self) -> None:
        """Hooks and task retries of jobs that ended shortly before a restart.

        Only the jobs whose plan has hooks or a task retry left are read whole. Which ones
        those are, three values of each job's `JobCreated` tell, read for all in one query
        without the plans' steps."""
        since = self.clock.now() - CATCH_UP_SECONDS
        rows, _ = await self.store.list_jobs(JobFilter(
            status=("completed", "failed", "cancelled"), since=since, limit=1000))
        rows = [row for row in rows if row.source_type != "hook"]
        created = await self.store.first_event_values(
            [row.job_id for row in rows], _END_DUTY_PATHS)
        for row in rows:
            values = created.get(row.job_id)
            if values is None or not has_end_duties(
                    values[0], values[1], failed=row.status == JobStatus.FAILED.value,
                    task_attempt=values[2]):
                continue
            state = await self.get_state(row.job_id)
            if state.plan.hooks or self.will_retry(state):
                await self.hooks.catch_up(state)
                await self._retry_task(state, delay=False)

    async def close(self) -> None:
        self._closing = True
        for active in self._active.values():
            if active.timer is not None:
                active.timer.cancel()
        # The notes and lines still queued for an asynchronous log store.
        writers = [a.writer for a in self._active.values() if a.writer is not None]
        if writers:
            await asyncio.wait([asyncio.ensure_future(w.flush(everything=True))
                                for w in writers], timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        self._active.clear()

    # --- jobs ------------------------------------------------------------------------

    async def create_job(
        self,
        workspace: str,
        task: str,
        raw_input: Mapping[str, Any] | None = None,
        *,
        source_type: str = "api",
        source_id: str | None = None,
        idempotency_key: str | None = None,
        by: str | None = None,
        parent: str | None = None,
        parent_step: str | None = None,
        depth: int = 0,
        priority: int | None = None,
        retry_of: str | None = None,
        job_id: str | None = None,
        reuse: Mapping[str, Any] | None = None,
        skip_reason: str | None = None,
        task_attempt: int = 1,
        adhoc: Plan | None = None,
        timeout: float | None = None,
        when_paused: str = "queue",
    ) -> str:
        """Validate the input, compile the plan and record a new job; returns its id.

        Invalid input raises `InputInvalid` before anything is written. With an
        idempotency key, a repeat returns the first job's id and writes nothing. With
        `skip_reason` the job is recorded as `skipped` and runs nothing (a concurrency
        policy chose to skip it). A task with a `concurrency` limit may queue or skip the
        job instead of starting it (`engine.concurrency`). `timeout` (seconds) overrides
        the task's job timeout. While the workspace or task is paused (`engine.opspause`)
        the job is queued until resumed, or skipped with `when_paused="skip"`. `adhoc` is
        a plan to run
        instead of the task's (a hook's one-step job); its input is taken as given.
        """
        ws = self.workspaces.get(workspace)
        loaded = ws.require()
        spec = loaded.spec.tasks.get(task) if adhoc is None else None
        if spec is None and adhoc is None:
            raise NotFound(f"task {task!r} not found in workspace {workspace!r}")
        scope = f"{workspace}/{task}"
        if idempotency_key:
            existing = await self.store.find_key(scope, idempotency_key)
            if existing is not None:
                return existing
        if depth > MAX_DEPTH:
            raise NotFound(f"sub-job nesting is capped at depth {MAX_DEPTH}")
        if spec is not None:
            plan = compile_task(loaded, task)
            job_input = coerce_input(
                spec.input, raw_input or {}, secrets=ws.secrets, connections=ws.connections,
                connection_types=loaded.spec.connection_types,
            )
            secret_fields = secret_paths(spec.input)
        else:
            assert adhoc is not None
            plan, job_input = adhoc, dict(raw_input or {})
            secret_fields = tuple(
                name for step in adhoc.steps.values()
                for name, field_spec in (step.action.get("input") or {}).items()
                if isinstance(field_spec, Mapping) and field_spec.get("secret")
            )
        limit = spec.concurrency if spec is not None else None
        group = group_of(workspace, task, limit, job_input) if limit is not None else None
        job_id = job_id or new_job_id()
        task_state = await self.task_states.latest(workspace, task) if spec else None
        paused = (await self.ops.state(workspace)).reason(task) if spec else None
        if paused is not None and skip_reason is None and when_paused == "skip":
            skip_reason = paused
        if idempotency_key is None:
            self.logs.prepare(job_id)  # its first line follows the append below
        async with self.concurrency.lock(group) if group else contextlib.nullcontext():
            now = self.clock.now()
            created = ev.JobCreated(
                ts=now, job_id=job_id, workspace=workspace, revision=loaded.revision,
                task=task, input=job_input, plan=plan.to_dict(), source_type=source_type,
                source_id=source_id, parent=parent, parent_step=parent_step, depth=depth,
                idempotency_key=idempotency_key,
                timeout=timeout if timeout is not None else plan.timeout,
                priority=priority or (spec.priority if spec else 3), by=by,
                retry_of=retry_of, task_attempt=task_attempt, secret_paths=secret_fields,
            )
            state = evolve(None, created)
            events: list[ev.Event] = [created]
            if task_state is not None:
                events.append(ev.TaskStateLoaded(ts=now, state=task_state))
            for name, output in (reuse or {}).items():
                events.append(ev.StepCompleted(ts=now, step=name, output=output,
                                               reused_from=retry_of))
            state = fold(events[1:], state)
            admission = None
            decided = len(events)  # what follows is the job's start, queue or skip
            if (skip_reason is None and paused is None and group is not None
                    and limit is not None):
                admission = self.concurrency.admit(group, limit)
                if admission.action == "skip":
                    skip_reason = admission.reason
            if skip_reason is not None:
                events.append(ev.JobSkipped(ts=now, reason=skip_reason))
            elif paused is not None:
                events.append(ev.JobQueued(ts=now, reason=paused))
            elif admission is not None and admission.action == "queue":
                events.append(ev.JobQueued(ts=now, reason=admission.reason or "queued"))
            else:
                events.extend(decide(state, cmd.Start(), now, self._env(state)))
            while True:
                new_state = fold(events[1:], evolve(None, created))
                masker = self._masker(new_state)
                try:
                    await self.store.append(
                        job_id, 0, events,
                        projection=self._projection(masker, new_state, None),
                        idempotency=(scope, idempotency_key) if idempotency_key else None,
                        outbox=self._outbox(new_state, events),
                    )
                except DuplicateKey as exc:
                    return exc.job_id
                except SlotTaken:
                    # A job on another replica holds the slot: queue or skip by policy.
                    assert group is not None and limit is not None
                    admission = self.concurrency.taken(group, limit)
                    events = [*events[:decided], admission.event(now)]
                    continue
                break
            if group is not None and limit is not None:
                self.concurrency.remember(job_id, group, limit)
            active = self._active.get(job_id) or ActiveJob(new_state, masker=masker)
            # Once committed the job is in the store, and a command may have reached it
            # (loaded from the store) before this line ran: e.g. a remote worker claiming
            # its first step. That copy holds these events and what followed; replacing it
            # would lose them.
            self._active[job_id] = active
            self._after_append(active, events)
        if admission is not None and group is not None and limit is not None:
            for previous in await self.concurrency.superseded(group, limit, admission, job_id):
                self.spawn(self._cancel_quietly(previous, f"superseded by job {job_id}"))
        return job_id

    async def rerun(
        self,
        job_id: str,
        *,
        from_step: str | None = None,
        raw_input: Mapping[str, Any] | None = None,
        by: str | None = None,
    ) -> str:
        """Start a new job of the same task; with `from_step`, resume from that step.

        The steps upstream of `from_step` that completed in the original job are not run
        again: the new job records their outputs as reused (`StepCompleted.reused_from`).
        """
        original = await self.get_state(job_id)
        reuse: dict[str, Any] = {}
        if from_step is not None:
            if from_step not in original.plan.steps:
                raise NotFound(f"step {from_step!r} not found in job {job_id}")
            for name in _ancestors(original, from_step):
                step = original.steps.get(name)
                if step is not None and step.status == StepStatus.COMPLETED:
                    reuse[name] = step.output
        new_id = await self.create_job(
            original.workspace, original.task,
            dict(original.input) if raw_input is None else raw_input,
            source_type=original.source_type, source_id=original.source_id, by=by,
            parent=original.parent, parent_step=original.parent_step, depth=original.depth,
            priority=original.priority, retry_of=job_id, reuse=reuse,
        )
        return new_id

    async def command(self, job_id: str, command: cmd.Command) -> JobState:
        """Decide `command` on a job and append what follows; returns the new state.

        Domain errors (`InvalidTransition`, `Conflict`) propagate and nothing is written.
        """
        state, _ = await self.command_many(job_id, command, ())
        return state

    async def command_then(self, job_id: str, command: cmd.Command, then: cmd.Command
                           ) -> tuple[JobState, bool]:
        """`command`, then `then` decided on the state `command` leads to, their events
        appended together (one transaction); returns the new state and whether `then`
        was recorded. `command` fails as in `command`; `then` is dropped, and only
        `command`'s events written, when it is not allowed at that point.

        The executor uses it to claim a step of the same job with the completion of the
        step whose slot it takes: one append instead of two, same events.
        """
        state, recorded = await self.command_many(job_id, command, (then,))
        return state, recorded[0]

    async def command_many(self, job_id: str, command: cmd.Command,
                           more: Sequence[cmd.Command], *,
                           before: Sequence[cmd.Command] = (),
                           after: asyncio.Future[None] | None = None,
                           ) -> tuple[JobState, list[bool]]:
        """`command_then` for several: each of `more` is decided on the state the ones
        before it lead to and dropped when not allowed; all the events are appended
        together. Returns the new state and, for each of `more`, whether it was
        recorded. `before`: commands decided ahead of `command`, each dropped when not
        allowed (the executor's step starts that ride along with a step's end); when
        `command` itself is refused nothing is written, theirs included.

        Group commit: the commands of one job that arrive in the same turn of the event
        loop (or while the job's previous append is being written) are decided in turn
        and appended in one transaction; a refused one is left out of it alone. The
        state returned is the job's state after that append.

        `after`: what must be done before the events are appended (the write of a
        step's log lines, which precede its end); it is waited for after the decision,
        so that the two overlap.
        """
        active = await self._load(job_id)
        request = _Request(command, more, before, asyncio.get_running_loop().create_future(),
                           after)
        active.queue.append(request)
        if active.committer is None:
            active.committer = asyncio.ensure_future(self._commit_queued(active))
        return await request.future

    async def _commit_queued(self, active: ActiveJob) -> None:
        """Decide and append the job's queued commands, a batch at a time."""
        batch: list[_Request] = []
        try:
            while active.queue:
                async with active.lock:
                    batch, active.queue = active.queue, []
                    await self._commit_batch(active, [r for r in batch if not r.future.done()])
        finally:
            active.committer = None
            for request in [*batch, *active.queue]:  # only when this task was cancelled
                request.future.cancel()
            active.queue = []

    async def _commit_batch(self, active: ActiveJob, batch: list[_Request]) -> None:
        for _ in range(3):
            state = active.state
            now = self.clock.now()
            events: list[ev.Event] = []
            decided = state
            outcomes: list[list[bool] | BaseException] = []
            for request in batch:
                try:
                    extra, decided, recorded = self._decide_request(decided, request, now)
                except Exception as exc:  # refused: the others go ahead without it
                    outcomes.append(exc)
                    continue
                events.extend(extra)
                outcomes.append(recorded)
            if events:
                try:
                    await self._append(active, events, decided, [
                        r.after for r in batch if r.after is not None and not r.after.done()])
                except VersionConflict:
                    # Another process appended first: fold its events, decide again.
                    self._fold_foreign(active, await self.store.read(
                        active.state.job_id, after_version=state.version))
                    continue
                except Exception as exc:
                    outcomes = [o if isinstance(o, BaseException) else exc for o in outcomes]
            for request, outcome in zip(batch, outcomes, strict=True):
                if request.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    request.future.set_exception(outcome)
                else:
                    request.future.set_result((active.state, outcome))
            return
        error = VersionConflict(f"job {active.state.job_id}: too many concurrent writers")
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)

    def _decide_request(self, state: JobState, request: _Request, now: float
                        ) -> tuple[list[ev.Event], JobState, list[bool]]:
        """The events of one `command_many` call on `state`, the state they lead to and
        which of its `more` were recorded; raises when its command is refused."""
        events: list[ev.Event] = []
        for first in request.before:
            try:
                extra, after = decide_state(state, first, now, self._env(state))
            except (Conflict, NotFound):
                continue
            if extra:
                events, state = [*events, *extra], after
        extra, state = decide_state(state, request.command, now, self._env(state))
        events.extend(extra)
        recorded: list[bool] = []
        for then in request.more:
            try:
                extra, after = decide_state(state, then, now, self._env(state))
            except (Conflict, NotFound):
                recorded.append(False)
                continue
            recorded.append(bool(extra))
            if extra:
                events, state = [*events, *extra], after
        return events, state, recorded

    async def refresh(self, job_id: str, seen_version: int | None = None) -> None:
        """Fold events another process appended to a job held in memory (HA replicas).

        Its timers, waiters and end follow; ready steps are not dispatched again here
        (the appending process queued them). An operations stream (`ops/<workspace>`)
        updates the workspace's pauses instead. `seen_version`: the highest version the
        caller saw appended; a job already folded that far (this process appended it)
        is left alone without reading the store.
        """
        if is_ops_stream(job_id):
            await self.ops.refresh(job_id)
            return
        active = self._active.get(job_id)
        if active is None:
            return
        if seen_version is not None and active.state.version >= seen_version:
            return
        async with active.lock:
            self._fold_foreign(active, await self.store.read(
                job_id, after_version=active.state.version))

    def _fold_foreign(self, active: ActiveJob, records: Sequence[RecordedEvent]) -> None:
        """Fold events another process appended to a job held here, and follow them up:
        after `refresh`, and when an append of ours lost the race to them (a later
        `refresh` finds them folded already and does nothing)."""
        if not records:
            return
        events = [r.event() for r in records]
        active.state = fold(events, active.state)
        if any(isinstance(e, ev.JobCancelRequested) for e in events):
            # Cancelled through another replica: its steps may be running here.
            self._cancel_running(active.state)
        self._schedule_wakeup(active)
        if active.state.terminal:
            self._finish(active)

    async def get_state(self, job_id: str) -> JobState:
        """The current state of a job (in memory when active, else folded from the log)."""
        active = self._active.get(job_id)
        if active is not None:
            return active.state
        records = await self.store.read(job_id)
        if not records:
            raise NotFound(f"job {job_id!r} not found")
        return fold(r.event() for r in records)

    async def wait(self, job_id: str, timeout: float | None = None) -> JobState:
        """Wait until a job is terminal (or `timeout` passes) and return its state."""
        active = self._active.get(job_id)
        if active is not None and not active.state.terminal:
            try:
                await asyncio.wait_for(active.done.wait(), timeout)
            except TimeoutError:
                pass
        if active is not None and active.state.terminal:
            return active.state  # the final state, without folding the stream again
        return await self.get_state(job_id)

    def active_state(self, job_id: str) -> JobState | None:
        active = self._active.get(job_id)
        return active.state if active else None

    def active_states(self) -> Iterator[JobState]:
        """The states of the jobs held in memory (not ended)."""
        return (active.state for active in list(self._active.values()))

    @property
    def artifacts_root(self) -> Path | None:
        """Where steps' artifacts live (the embedded executor's folder), if known."""
        root = getattr(self.dispatcher, "artifacts_root", None)
        return root if isinstance(root, Path) else None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run follow-up work (hooks, sub-jobs, queue releases) in the background; it is
        cancelled by `close`, and a failure is logged, never raised."""
        if self._closing:
            coro.close()
            return
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until follow-up work is done and no job is active (or `timeout` passes):
        what `partitur run` waits for so that hooks and child jobs finish."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            busy = [t for t in self._tasks if not t.done()]
            if not busy and not self._active:
                return
            if busy:
                await asyncio.wait(busy, timeout=max(0.0, deadline - loop.time()))
            else:
                await asyncio.wait(
                    [asyncio.ensure_future(a.done.wait()) for a in list(self._active.values())],
                    timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED)

    def will_retry(self, state: JobState) -> bool:
        """Whether a failed job is followed by a task-level retry (a new job)."""
        return (state.status is JobStatus.FAILED
                and state.task_attempt < state.plan.retry.max_attempts)

    def _on_end(self, state: JobState, events: Sequence[ev.Event]) -> None:
        if self.will_retry(state) and any(isinstance(e, ev.JobFailed) for e in events):
            self.spawn(self._retry_task(state))

    async def _retry_task(self, state: JobState, *, delay: bool = True) -> None:
        """Start the next attempt of a failed job (once: under an idempotency key)."""
        if not self.will_retry(state):
            return
        attempt = state.task_attempt + 1
        if delay:
            wait = state.plan.retry.delay_before(attempt, self.rand())
            if wait > 0:
                await asyncio.sleep(wait)
        retry_id = await self.create_job(
            state.workspace, state.task, dict(state.input), source_type=state.source_type,
            source_id=state.source_id, by=state.created_by, parent=state.parent,
            parent_step=state.parent_step, depth=state.depth, priority=state.priority,
            retry_of=state.job_id, task_attempt=attempt,
            idempotency_key=f"retry:{state.job_id}",
        )
        await self.subjobs.adopt_retry(state, retry_id)

    async def _cancel_quietly(self, job_id: str, reason: str) -> None:
        try:
            state = await self.get_state(job_id)
            if not state.terminal:
                await self.command(job_id, cmd.Cancel(by=None, reason=reason))
        except (Conflict, NotFound) as exc:
            log.info("job %s not cancelled: %s", job_id, exc)

    def writer(self, job_id: str) -> JobLogWriter:
        """The log writer of an active job (steps' lines and the `_server` notes)."""
        active = self._active.get(job_id)
        if active is None:
            raise NotFound(f"job {job_id!r} is not active")
        return self._writer(active)

    def secrets_of(self, state: JobState) -> dict[str, Any]:
        try:
            return self.workspaces.get(state.workspace).secrets
        except NotFound:
            return {}

    def real_renderer(self, state: JobState) -> TemplateStepRenderer:
        """A renderer with the real secret values (for dispatch, never for events)."""
        return TemplateStepRenderer(self.secrets_of(state), task_state=state.task_state)

    # --- internals -------------------------------------------------------------------

    def _env(self, state: JobState) -> Env:
        return Env(renderer=TemplateStepRenderer(_masked(self.secrets_of(state)),
                                                 task_state=state.task_state),
                   rand=self.rand)

    async def _load(self, job_id: str) -> ActiveJob:
        active = self._active.get(job_id)
        if active is not None:
            return active
        records = await self.store.read(job_id)
        if not records:
            raise NotFound(f"job {job_id!r} not found")
        active = self._active.get(job_id)
        if active is None:
            active = ActiveJob(fold(r.event() for r in records))
            if not active.state.terminal:
                self._active[job_id] = active
                self._after_append(active, [])
        return active

    async def _append(self, active: ActiveJob, events: Sequence[ev.Event],
                      new_state: JobState, after: Sequence[asyncio.Future[None]] = ()) -> None:
        """Append `events` to the job held in `active`, once `after` are done; `new_state`
        is what they fold to (`decide_state` computed it while deciding)."""
        state = active.state
        touched: set[str] = set()
        for event in events:
            if isinstance(event, ev.StepEvent):
                touched.add(event.step)
            if isinstance(event, ev.LoopExpanded):
                touched.update(s.name for s in new_state.instances(event.step))
        if active.masker is None:
            active.masker = self._masker(new_state)
        projection = self._projection(active.masker, new_state, touched)
        outbox = self._outbox(new_state, events)
        if after:
            await asyncio.wait(after)  # `wait` leaves them running if this is cancelled
        await self.store.append(state.job_id, state.version, events, projection=projection,
                                outbox=outbox)
        active.state = new_state
        self._after_append(active, events)

    def _outbox(self, state: JobState, events: Sequence[ev.Event]) -> Outbox | None:
        """What the dispatcher and the outbox sources want written with these events."""
        outbox = Outbox()
        source = self._outbox_source
        if source is not None and not self._closing:
            outbox += Outbox(work=source.outbox_for(state, events))
        for extra in self._outbox_sources:
            more = extra(state, events)
            if more is not None:
                outbox += more
        return None if outbox.empty else outbox

    def _writer(self, active: ActiveJob) -> JobLogWriter:
        if active.writer is None:
            active.writer = JobLogWriter(active.state.job_id, self.logs, self.bus,
                                         self.redactor(active.state))
        return active.writer

    def redactor(self, state: JobState) -> Redactor:
        """Masks a job's secrets: the workspace's secret values (secrets and connection
        properties marked secret) and the values of its input fields marked secret."""
        ws_secrets: list[str] = []
        try:
            ws_secrets = self.workspaces.get(state.workspace).secret_values
        except NotFound:
            pass
        secret_inputs: list[str] = []
        for name in state.secret_paths:
            value = state.input.get(name)
            if isinstance(value, Mapping):
                secret_inputs.extend(str(v) for v in value.values() if v not in (None, ""))
            elif value not in (None, ""):
                secret_inputs.append(str(value))
        return Redactor([*ws_secrets, *secret_inputs])

    def _masker(self, state: JobState) -> JobMasker:
        return JobMasker(self.redactor(state), state.secret_paths)

    @staticmethod
    def _projection(masker: JobMasker, state: JobState, touched: set[str] | None) -> Projection:
        """Projection rows, with secrets masked: the API shows these rows."""
        return Projection(masker.job_row(job_row(state)),
                          [masker.step_row(r) for r in step_rows(state, touched)])

    def _after_append(self, active: ActiveJob, events: Sequence[ev.Event]) -> None:
        state = active.state
        writer = self._writer(active)
        # The notes of all the events in one write to the log store, published in turn
        # with the events' frames.
        notes = [_note(event, state) for event in events]
        stored = writer.store_notes(
            [(note, event.ts) for note, event in zip(notes, events, strict=True) if note],
            promptly=state.terminal)
        publish, job_id = self.bus.publish, state.job_id
        if self.bus.subscribers(job_id):  # else publishing is a no-op: no frames built
            lines = iter(stored or ())
            for note, event in zip(notes, events, strict=True):
                if note and stored is not None:
                    publish(job_id, next(lines))
                frame = _frame(event, state)
                if frame is not None:
                    publish(job_id, frame)
        for listener in self._listeners:
            try:
                listener(state, events)
            except Exception:  # a listener must never break the engine
                log.exception("event listener failed")
        if not self._closing:
            if any(isinstance(e, ev.JobResumed) for e in events):
                # Claims refused while paused: hand those ready steps out again.
                active.dispatched = {k for k in active.dispatched
                                     if state.steps[k[0]].status is not StepStatus.READY}
            for name in _ready_now(state, events):
                key = (name, state.steps[name].attempt)
                if key in active.dispatched:
                    continue
                if state.plan_step(name).action_type == "task":
                    # Sub-jobs are the orchestrator's own work: no worker slot waits.
                    active.dispatched.add(key)
                    self.spawn(self.subjobs.start(state.job_id, name, key[1]))
                elif self.dispatcher is not None:
                    active.dispatched.add(key)
                    self.dispatcher.dispatch(state, name)
        if state.cancel_requested and (not events or any(
                isinstance(e, ev.JobCancelRequested) for e in events)):
            self._cancel_running(state)
        self._schedule_wakeup(active)
        if state.terminal and any(isinstance(e, _ENDS) for e in events):
            self._finish(active)

    def _cancel_running(self, state: JobState) -> None:
        """Stop the job's steps running here (a no-op for steps running elsewhere)."""
        if self.dispatcher is None or self._closing:
            return
        for step in state.steps.values():
            if step.status == StepStatus.RUNNING and step.items is None:
                self.dispatcher.cancel(state.job_id, step.name)

    def _schedule_wakeup(self, active: ActiveJob) -> None:
        if active.timer is not None:
            active.timer.cancel()
            active.timer = None
        if active.state.terminal or self._closing:
            return
        wake = next_wakeup(active.state)
        if wake is None:
            return
        # A millisecond more: uvloop's timers count whole milliseconds and can fire up to
        # one early, and a tick before `wake` would decide nothing.
        delay = max(0.0, wake - self.clock.now()) + 0.001
        loop = asyncio.get_running_loop()
        job_id = active.state.job_id
        active.timer = loop.call_later(delay, self._spawn_tick, job_id)

    def _spawn_tick(self, job_id: str) -> None:
        active = self._active.get(job_id)
        if active is not None:
            active.timer = None  # fired
        task = asyncio.ensure_future(self._tick(job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick(self, job_id: str) -> None:
        try:
            await self.command(job_id, cmd.Tick())
        except Exception:
            log.exception("tick of job %s failed", job_id)
        active = self._active.get(job_id)
        if active is not None and active.timer is None:
            # The tick decided nothing (it came early): wait for the wakeup again.
            self._schedule_wakeup(active)

    def _finish(self, active: ActiveJob) -> None:
        job_id = active.state.job_id
        active.done.set()
        self.bus.close_job(job_id)
        task = asyncio.ensure_future(self.logs.finish(job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._active.pop(job_id, None)


def _ready_now(state: JobState, events: Sequence[ev.Event]) -> list[str]:
    """The ready steps to hand out after `events` (all of them after a load or resume)."""
    if not events or any(isinstance(e, ev.JobResumed | ev.JobStarted) for e in events):
        return dispatchable(state)
    if state.paused:
        return []
    return [e.step for e in events
            if isinstance(e, ev.StepReady) and state.steps[e.step].status is StepStatus.READY]


def _frame(event: ev.Event, state: JobState) -> dict[str, Any] | None:
    """The live-bus status frame of an event (`?format=events` on the WebSocket)."""
    quiet = ev.StepOutput | ev.ChildJobStarted | ev.TaskStateSaved
    if isinstance(event, ev.StepEvent) and not isinstance(event, quiet):
        step = state.steps.get(event.step)
        if step is None:
            return None
        return {"type": "step", "ts": event.ts, "version": state.version, "step": step.name,
                "status": step.status.value, "attempt": step.attempt, "error": step.error}
    if isinstance(event, ev.JobCreated | ev.JobStarted | ev.JobCompleted | ev.JobFailed
                  | ev.JobCancelled | ev.JobSkipped | ev.JobQueued | ev.JobPaused
                  | ev.JobResumed):
        return {"type": "job", "ts": event.ts, "version": state.version,
                "status": job_status(state)}
    return None


def _note(event: ev.Event, state: JobState) -> str | None:
    """The `_server` log line for an event, or None when it needs none."""
    match event:
        case ev.JobCreated():
            return f"job created: task {event.task} (source {event.source_type})"
        case ev.JobStarted():
            return "job started"
        case ev.StepReady():
            return f"step {event.step} ready (attempt {event.attempt})"
        case ev.StepStarted():
            pid = f", pid {event.pid}" if event.pid else ""
            return f"step {event.step} started on {event.worker_id}{pid}"
        case ev.StepCompleted():
            if event.reused_from:
                return f"step {event.step} reused the output of job {event.reused_from}"
            return f"step {event.step} completed"
        case ev.StepFailed():
            return f"step {event.step} failed ({event.kind}): {event.error}"
        case ev.StepRetryScheduled():
            delay = max(0.0, event.at - event.ts)
            return f"step {event.step}: attempt {event.attempt} scheduled in {delay:.1f}s"
        case ev.StepSkipped():
            return f"step {event.step} skipped: {event.reason}"
        case ev.LoopExpanded():
            return f"step {event.step} expanded into {len(event.items)} instances"
        case ev.StepSuspended():
            return f"step {event.step} waiting for approval" + (
                f": {event.message}" if event.message else "")
        case ev.StepApproved():
            return f"step {event.step} approved" + (f" by {event.by}" if event.by else "")
        case ev.StepRejected():
            return f"step {event.step} rejected" + (f": {event.reason}" if event.reason else "")
        case ev.StepCancelled():
            return f"step {event.step} cancelled"
        case ev.JobCancelRequested():
            return "cancel requested" + (f" by {event.by}" if event.by else "")
        case ev.JobCompleted():
            return "job completed"
        case ev.JobFailed():
            return f"job failed: {event.error}"
        case ev.JobCancelled():
            return "job cancelled" + (f": {event.reason}" if event.reason else "")
        case ev.JobSkipped():
            return f"job skipped: {event.reason}"
        case ev.JobQueued():
            return f"job queued: {event.reason}"
        case ev.JobPaused():
            return "job paused" + (f" by {event.by}" if event.by else "") + (
                f": {event.reason}" if event.reason else "")
        case ev.JobResumed():
            return "job resumed" + (f" by {event.by}" if event.by else "")
        case ev.ChildJobStarted():
            return f"step {event.step} started child job {event.child_job_id}"
        case ev.TaskStateSaved():
            return f"step {event.step} saved the task state"
        case ev.HookFired():
            return f"hook {event.hook} started job {event.job_id or '(none: it failed)'}"
    return None


def _ancestors(state: JobState, step: str) -> list[str]:
    """Every step `step` depends on, transitively, in plan order."""
    seen: set[str] = set()
    todo = list(state.plan.steps[step].depends_on)
    while todo:
        name = todo.pop()
        if name not in seen and name in state.plan.steps:
            seen.add(name)
            todo.extend(state.plan.steps[name].depends_on)
    return [name for name in state.plan.steps if name in seen]



def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background work failed", exc_info=task.exception())
