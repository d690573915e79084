"""Job and step state, the transition tables, and `evolve` (DESIGN §4).

`evolve(state, event)` is pure and total over valid streams: replaying the same events
always gives the same state. It is a `singledispatch` over event types, one small
function per event. A stream that asks for a move the tables forbid raises
`InvalidTransition`, which is how a corrupted stream is caught on replay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as _dataclass_replace
from enum import StrEnum
from functools import singledispatch
from typing import Any, TypeVar

from engine.core import events as ev
from engine.core.frozen import fast_replace, fast_with
from engine.core.plan import Plan, PlanStep, plan_from_data
from engine.errors import InvalidTransition


class StepStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


S = StepStatus
STEP_TRANSITIONS: Mapping[StepStatus, frozenset[StepStatus]] = {
    # pending → running is a loop placeholder expanding; pending → failed a render error.
    S.PENDING: frozenset({S.READY, S.SKIPPED, S.CANCELLED, S.RUNNING, S.FAILED, S.COMPLETED}),
    S.READY: frozenset({S.RUNNING, S.CANCELLED, S.FAILED, S.COMPLETED, S.SUSPENDED}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.SUSPENDED, S.CANCELLED}),
    S.SUSPENDED: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED}),
    # failed → pending: a retry is scheduled; the step becomes ready at `retry_at`.
    S.FAILED: frozenset({S.PENDING}),
    S.COMPLETED: frozenset(),
    S.SKIPPED: frozenset(),
    S.CANCELLED: frozenset(),
}
STEP_TERMINAL = frozenset({S.COMPLETED, S.FAILED, S.SKIPPED, S.CANCELLED})

J = JobStatus
JOB_TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    J.PENDING: frozenset({J.RUNNING, J.CANCELLED, J.FAILED, J.SKIPPED, J.COMPLETED}),
    J.RUNNING: frozenset({J.COMPLETED, J.FAILED, J.CANCELLED}),
    J.COMPLETED: frozenset(),
    J.FAILED: frozenset(),
    J.CANCELLED: frozenset(),
    J.SKIPPED: frozenset(),
}
JOB_TERMINAL = frozenset({J.COMPLETED, J.FAILED, J.CANCELLED, J.SKIPPED})


@dataclass(frozen=True, slots=True)
class StepState:
    """The state of one step (or loop instance `name[i]`, whose `loop_of` is `name`)."""

    name: str
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    input: Mapping[str, Any] | None = None
    output: Any = None
    error: str | None = None
    error_kind: str | None = None
    exit_code: int | None = None
    worker_id: str | None = None
    lease: str | None = None
    pid: int | None = None
    ready_at: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    retry_at: float | None = None
    skip_reason: str | None = None
    message: str | None = None
    timeout_at: float | None = None
    decided_by: str | None = None
    decision_input: Mapping[str, Any] | None = None
    loop_of: str | None = None
    loop_index: int | None = None
    item: Any = None
    items: tuple[Any, ...] | None = None
    reused_from: str | None = None
    child_job_id: str | None = None
    open_instances: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in STEP_TERMINAL

    @property
    def waits(self) -> bool:
        """Whether time alone will change this step (a due retry, an approval timeout)."""
        return (self.status is StepStatus.PENDING and self.retry_at is not None) or (
            self.status is StepStatus.SUSPENDED and self.timeout_at is not None)


@dataclass(frozen=True, slots=True)
class JobState:
    """The state of one job, folded from its stream."""

    job_id: str
    workspace: str
    revision: str
    task: str
    input: Mapping[str, Any]
    plan: Plan
    steps: Mapping[str, StepState]
    created_at: float
    status: JobStatus = JobStatus.PENDING
    version: int = 0
    started_at: float | None = None
    completed_at: float | None = None
    output: Mapping[str, Any] | None = None
    error: str | None = None
    cancel_requested: bool = False
    cancelled_by: str | None = None
    cancel_reason: str | None = None
    source_type: str = "api"
    source_id: str | None = None
    parent: str | None = None
    parent_step: str | None = None
    depth: int = 0
    idempotency_key: str | None = None
    timeout: float | None = None
    priority: int = 3
    created_by: str | None = None
    retry_of: str | None = None
    task_attempt: int = 1
    secret_paths: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    hooks_fired: tuple[str, ...] = field(default=())
    queued: bool = False
    paused: bool = False
    paused_by: str | None = None
    last_event_at: float = 0.0
    task_state: Any = None
    saved_state: Any = None
    # Kept by evolve so that decisions need not scan every step: how many steps are not
    # terminal, and how many wait for a time (a retry, an approval timeout).
    open_steps: int = 0
    waiting: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in JOB_TERMINAL

    def plan_step(self, name: str) -> PlanStep:
        """The plan entry of a step or of the loop a loop instance belongs to."""
        step = self.steps[name]
        return self.plan.steps[step.loop_of or name]

    def instances(self, loop: str) -> list[StepState]:
        """The instances of a loop placeholder, by index."""
        return [s for s in self.steps.values() if s.loop_of == loop]


_T = TypeVar("_T")

_replace_step = fast_replace(StepState)
_replace_job = fast_replace(JobState)
# What every step event changes in its job (see `_step`).
_with_step = fast_with(JobState, ("steps", "version", "last_event_at", "open_steps", "waiting"))
# New states are copies of blank ones: the frozen `__init__` sets each field the slow way.
_BLANK_STEP = StepState("")
_BLANK_JOB = JobState("", "", "", "", {}, Plan("", {}), {}, 0.0)


def replace(obj: _T, /, **changes: Any) -> _T:
    """`dataclasses.replace` for `JobState`/`StepState` (fast path), any dataclass else."""
    if type(obj) is JobState:
        return _replace_job(obj, **changes)  # type: ignore[return-value]
    if type(obj) is StepState:
        return _replace_step(obj, **changes)  # type: ignore[return-value]
    return _dataclass_replace(obj, **changes)  # type: ignore[type-var]


def instance_name(loop: str, index: int) -> str:
    return f"{loop}[{index}]"


class StreamCorrupt(InvalidTransition):
    """The event stream cannot be replayed."""


# --- evolve --------------------------------------------------------------------------


def fold(events: Iterable[ev.Event], state: JobState | None = None) -> JobState:
    """Fold events into a state (the first must be `JobCreated` when `state` is None)."""
    for event in events:
        state = evolve(state, event)
    if state is None:
        raise StreamCorrupt("stream", "empty", "state", "an empty stream has no state")
    return state


def evolve(state: JobState | None, event: ev.Event) -> JobState:
    """The state after one more event."""
    if state is None:
        if not isinstance(event, ev.JobCreated):
            raise StreamCorrupt("stream", "empty", event.type, "a stream starts with JobCreated")
        return _created(event)
    apply = _HANDLERS.get(type(event))
    if apply is None:
        apply = _HANDLERS[type(event)] = _apply.dispatch(type(event))
    new = apply(event, state)
    # The handlers count the event and stamp its time themselves (one copy per event);
    # this covers those that leave the state as it was.
    if new.version <= state.version or new.last_event_at is not event.ts:
        new = _replace_job(new, version=max(new.version, state.version + 1),
                           last_event_at=event.ts)
    return new


def _created(e: ev.JobCreated) -> JobState:
    plan = plan_from_data(e.plan)
    return _replace_job(
        _BLANK_JOB,
        job_id=e.job_id, workspace=e.workspace, revision=e.revision, task=e.task,
        input=e.input, plan=plan,
        steps={name: _replace_step(_BLANK_STEP, name=name) for name in plan.steps},
        open_steps=len(plan.steps), created_at=e.ts, last_event_at=e.ts, version=1,
        source_type=e.source_type, source_id=e.source_id,
        parent=e.parent, parent_step=e.parent_step, depth=e.depth,
        idempotency_key=e.idempotency_key, timeout=e.timeout, priority=e.priority,
        created_by=e.by, retry_of=e.retry_of, task_attempt=e.task_attempt,
        secret_paths=e.secret_paths,
    )


def _job(state: JobState, e: ev.Event, to: JobStatus, **changes: Any) -> JobState:
    if to != state.status and to not in JOB_TRANSITIONS[state.status]:
        raise InvalidTransition(f"job {state.job_id}", state.status, to)
    return _replace_job(state, status=to, version=state.version + 1, last_event_at=e.ts,
                        **changes)


def _counted(state: JobState, e: ev.Event, **changes: Any) -> JobState:
    """The state with `changes`, one more event counted and the event's time stamped."""
    return _replace_job(state, version=state.version + 1, last_event_at=e.ts, **changes)


def _step(state: JobState, e: ev.StepEvent, to: StepStatus | None = None,
          **changes: Any) -> JobState:
    """The job with step `e.step` moved to `to` (None: kept) and given `changes`."""
    name = e.step
    current = state.steps.get(name)
    if current is None:
        raise StreamCorrupt(f"step {name}", "missing", str(to), f"unknown step {name!r}")
    if to is not None:
        if to != current.status and to not in STEP_TRANSITIONS[current.status]:
            raise InvalidTransition(f"step {name}", current.status, to)
        changes["status"] = to
    updated = _replace_step(current, **changes)
    steps = dict(state.steps)
    steps[name] = updated
    opened = (updated.status not in STEP_TERMINAL) - (current.status not in STEP_TERMINAL)
    if opened and current.loop_of is not None:
        loop = steps[current.loop_of]
        steps[current.loop_of] = _replace_step(loop, open_instances=loop.open_instances + opened)
    return _with_step(state, steps, state.version + 1, e.ts, state.open_steps + opened,
                      state.waiting + updated.waits - current.waits)


@singledispatch
def _apply(event: ev.Event, state: JobState) -> JobState:
    raise StreamCorrupt("event", event.type, "state", f"{event.type} cannot follow JobCreated")


# event class → its `_apply` implementation, filled on first use (skips the dispatch).
_HANDLERS: dict[type[ev.Event], Any] = {}


@_apply.register
def _(e: ev.JobStarted, state: JobState) -> JobState:
    return _job(state, e, J.RUNNING, started_at=e.ts, queued=False)


@_apply.register
def _(e: ev.JobQueued, state: JobState) -> JobState:
    if state.status is not J.PENDING:
        raise InvalidTransition(f"job {state.job_id}", state.status, "queued")
    return _counted(state, e, queued=True)


@_apply.register
def _(e: ev.TaskStateLoaded, state: JobState) -> JobState:
    return _counted(state, e, task_state=e.state)


@_apply.register
def _(e: ev.TaskStateSaved, state: JobState) -> JobState:
    _step(state, e)  # the step must exist
    return _counted(state, e, saved_state=e.state)


@_apply.register
def _(e: ev.JobCancelRequested, state: JobState) -> JobState:
    return _counted(state, e, cancel_requested=True, cancelled_by=e.by,
                    cancel_reason=e.reason)


@_apply.register
def _(e: ev.JobPaused, state: JobState) -> JobState:
    return _counted(state, e, paused=True, paused_by=e.by)


@_apply.register
def _(e: ev.JobResumed, state: JobState) -> JobState:
    return _counted(state, e, paused=False, paused_by=None)


@_apply.register
def _(e: ev.JobCompleted, state: JobState) -> JobState:
    return _job(state, e, J.COMPLETED, output=dict(e.output), completed_at=e.ts)


@_apply.register
def _(e: ev.JobFailed, state: JobState) -> JobState:
    return _job(state, e, J.FAILED, error=e.error, completed_at=e.ts)


@_apply.register
def _(e: ev.JobCancelled, state: JobState) -> JobState:
    return _job(state, e, J.CANCELLED, error=e.reason, completed_at=e.ts)


@_apply.register
def _(e: ev.JobSkipped, state: JobState) -> JobState:
    return _job(state, e, J.SKIPPED, error=e.reason, completed_at=e.ts)


@_apply.register
def _(e: ev.StepReady, state: JobState) -> JobState:
    return _step(state, e, S.READY, input=dict(e.input), attempt=e.attempt,
                 ready_at=e.ts, retry_at=None, error=None, error_kind=None, exit_code=None)


@_apply.register
def _(e: ev.StepSkipped, state: JobState) -> JobState:
    return _step(state, e, S.SKIPPED, skip_reason=e.reason, completed_at=e.ts)


@_apply.register
def _(e: ev.StepClaimed, state: JobState) -> JobState:
    return _step(state, e, S.RUNNING, attempt=e.attempt, worker_id=e.worker_id,
                 lease=e.lease, started_at=e.ts)


@_apply.register
def _(e: ev.StepStarted, state: JobState) -> JobState:
    return _step(state, e, S.RUNNING, attempt=e.attempt, worker_id=e.worker_id,
                 pid=e.pid, started_at=e.ts)


@_apply.register
def _(e: ev.StepOutput, state: JobState) -> JobState:
    return _step(state, e, output=e.output)


@_apply.register
def _(e: ev.StepCompleted, state: JobState) -> JobState:
    current = state.steps.get(e.step)
    started = current.started_at if current and current.started_at else e.ts
    return _step(state, e, S.COMPLETED, output=e.output, completed_at=e.ts, lease=None,
                 reused_from=e.reused_from, started_at=started, attempt=max(e.attempt, 1))


@_apply.register
def _(e: ev.StepFailed, state: JobState) -> JobState:
    current = state.steps.get(e.step)
    return _step(state, e, S.FAILED, error=e.error, error_kind=e.kind,
                 exit_code=e.exit_code, completed_at=e.ts, lease=None,
                 attempt=max(e.attempt, current.attempt if current else 0))


@_apply.register
def _(e: ev.StepRetryScheduled, state: JobState) -> JobState:
    return _step(state, e, S.PENDING, attempt=e.attempt - 1, retry_at=e.at,
                 completed_at=None, worker_id=None, pid=None)


@_apply.register
def _(e: ev.StepSuspended, state: JobState) -> JobState:
    return _step(state, e, S.SUSPENDED, message=e.message, timeout_at=e.timeout_at,
                 started_at=state.steps[e.step].started_at or e.ts)


@_apply.register
def _(e: ev.StepApproved, state: JobState) -> JobState:
    output = {"approved": True, "approved_by": e.by, "approved_at": e.ts, "input": dict(e.input)}
    return _step(state, e, S.COMPLETED, output=output, decided_by=e.by,
                 decision_input=dict(e.input), completed_at=e.ts)


@_apply.register
def _(e: ev.StepRejected, state: JobState) -> JobState:
    reason = e.reason or "rejected"
    return _step(state, e, S.FAILED, decided_by=e.by, error=f"rejected: {reason}",
                 error_kind="rejected", completed_at=e.ts)


@_apply.register
def _(e: ev.LoopExpanded, state: JobState) -> JobState:
    state = _step(state, e, S.RUNNING, items=tuple(e.items), started_at=e.ts,
                  open_instances=len(e.items))
    steps = dict(state.steps)
    for index, item in enumerate(e.items):
        name = instance_name(e.step, index)
        steps[name] = StepState(name, loop_of=e.step, loop_index=index, item=item)
    return _replace_job(state, steps=steps, open_steps=state.open_steps + len(e.items))


@_apply.register
def _(e: ev.StepCancelled, state: JobState) -> JobState:
    return _step(state, e, S.CANCELLED, completed_at=e.ts, error=e.reason, lease=None)


@_apply.register
def _(e: ev.HookFired, state: JobState) -> JobState:
    return _counted(state, e, hooks_fired=(*state.hooks_fired, e.hook))


@_apply.register
def _(e: ev.CallbackQueued, state: JobState) -> JobState:
    return state


@_apply.register
def _(e: ev.ChildJobStarted, state: JobState) -> JobState:
    state = _step(state, e, child_job_id=e.child_job_id)
    return _replace_job(state, children=(*state.children, e.child_job_id))
