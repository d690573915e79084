"""Decisions: commands → events, and the promotions that follow (DESIGN §4).

`decide(state, command, now, env)` returns the events one command causes followed by
those of `advance` on the resulting state, so one call is one decision and one append.
`advance` readies, skips, expands loops, finishes loop placeholders and ends the job,
repeating until nothing changes. Nothing here reads a clock or draws randomness: `now`
and `env.rand` are parameters, and templates are rendered by the injected
`env.renderer`. Skip rules follow Strøm: a failed or cancelled dependency skips a step
unless one of the two has `continue_on_failure`; a step whose dependencies were all
skipped is skipped; otherwise a skipped dependency counts as satisfied.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.plan import PlanIndex, PlanStep, plan_index
from engine.core.state import (
    JobState,
    JobStatus,
    StepState,
    StepStatus,
    evolve,
    fold,
    instance_name,
)
from engine.errors import Conflict, InvalidTransition, NotFound, RenderError

S = StepStatus
EARLIER_INSTANCE_FAILED = "an earlier instance failed"
_NOT_RETRIED = frozenset({"render", "rejected"})


class StepRenderer(Protocol):
    """Renders a step's templates against a job state (see engine.compiler.step_render).

    Each method raises `RenderError` when rendering fails.
    """

    def when(self, state: JobState, step: str) -> tuple[bool, Any]:
        """(truthy?, rendered value) of the step's `when`; only called when it is set."""
        ...

    def for_each(self, state: JobState, step: str) -> list[Any]:
        """The rendered `for_each` of a loop placeholder."""
        ...

    def input(self, state: JobState, step: str) -> dict[str, Any]:
        """The step's rendered `input`; `step` may be a loop instance `name[i]`."""
        ...


def _no_jitter() -> float:
    return 0.0


@dataclass(frozen=True, slots=True)
class Env:
    """What a decision may use besides the state and the time."""

    renderer: StepRenderer
    rand: Callable[[], float] = field(default=_no_jitter)
    max_loop_items: int = 10_000


# --- commands ------------------------------------------------------------------------


def decide(state: JobState, command: cmd.Command, now: float, env: Env) -> list[ev.Event]:
    """The events `command` causes, then those of `advance`; raises a domain error if the
    command is not allowed now. Never mutates `state`."""
    return decide_state(state, command, now, env)[0]


def decide_state(
    state: JobState, command: cmd.Command, now: float, env: Env
) -> tuple[list[ev.Event], JobState]:
    """`decide`, with the state its events lead to (`fold(events, state)`, which deciding
    computes anyway: the caller need not fold them again)."""
    if isinstance(command, cmd.RecordHook):
        if command.hook in state.hooks_fired:
            return [], state
        hook = ev.HookFired(ts=now, hook=command.hook, job_id=command.job_id)
        return [hook], evolve(state, hook)
    if state.terminal:
        if isinstance(command, cmd.Tick):
            return [], state
        raise InvalidTransition(f"job {state.job_id}", state.status, "?",
                                f"job already {state.status}")
    events = _command_events(state, command, now, env)
    if (isinstance(command, _CANNOT_ADVANCE) and state.status is JobStatus.RUNNING
            and not (state.waiting or state.cancel_requested)):
        return events, fold(events, state)
    touched: set[str] | None = set()
    for event in events:
        if isinstance(event, ev.StepEvent) and touched is not None:
            touched.add(event.step)
        elif isinstance(event, ev.JobStarted | ev.JobResumed):
            touched = None
    if isinstance(command, cmd.Tick | cmd.Start | cmd.Resume):
        touched = None
    log = _advance_log(fold(events, state), now, env, touched)
    return events + log.events, log.state


# A step claimed or started stays open, so no step of a running job can become ready,
# skipped or finished by it and the job cannot end: `advance` would find nothing (with no
# step waiting for a time, when it would look at every step). Two of a step's three
# decisions.
_CANNOT_ADVANCE = (cmd.Claim, cmd.MarkStarted)


def _command_events(
    state: JobState, command: cmd.Command, now: float, env: Env
) -> list[ev.Event]:
    match command:
        case cmd.Start():
            if state.status is not JobStatus.PENDING:
                raise InvalidTransition(f"job {state.job_id}", state.status, JobStatus.RUNNING)
            return [ev.JobStarted(ts=now)]
        case cmd.Claim(step=name, attempt=attempt, worker_id=worker, lease=lease):
            _target(state, name, attempt, {S.READY}, S.RUNNING)
            if state.paused:
                raise Conflict(f"job {state.job_id} is paused; step {name} waits")
            return [ev.StepClaimed(ts=now, step=name, attempt=attempt, worker_id=worker,
                                   lease=lease)]
        case cmd.MarkStarted(step=name, attempt=attempt, worker_id=worker, pid=pid, at=at):
            _target(state, name, attempt, {S.READY, S.RUNNING}, S.RUNNING)
            ts = now if at is None else min(now, max(at, state.last_event_at))
            return [ev.StepStarted(ts=ts, step=name, attempt=attempt, worker_id=worker,
                                   pid=pid)]
        case cmd.RecordOutput(step=name, attempt=attempt, output=output):
            _target(state, name, attempt, {S.RUNNING}, S.RUNNING)
            return [ev.StepOutput(ts=now, step=name, output=output)]
        case cmd.Complete(step=name, attempt=attempt, output=output):
            _target(state, name, attempt, {S.RUNNING}, S.COMPLETED)
            return [ev.StepCompleted(ts=now, step=name, attempt=attempt, output=output)]
        case cmd.Fail():
            return _fail(state, command, now, env)
        case cmd.Suspend(step=name, attempt=attempt, message=message, timeout_at=timeout_at):
            _target(state, name, attempt, {S.READY, S.RUNNING}, S.SUSPENDED)
            return [ev.StepSuspended(ts=now, step=name, message=message, timeout_at=timeout_at)]
        case cmd.Approve(step=name, by=by, input=data):
            _target(state, name, None, {S.SUSPENDED}, S.COMPLETED)
            return [ev.StepApproved(ts=now, step=name, by=by, input=dict(data))]
        case cmd.Reject(step=name, by=by, reason=reason):
            _target(state, name, None, {S.SUSPENDED}, S.FAILED)
            return [ev.StepRejected(ts=now, step=name, by=by, reason=reason)]
        case cmd.Cancel(by=by, reason=reason):
            if state.cancel_requested:
                return []
            return _cancel(state, by, reason, now)
        case cmd.CancelStep(step=name, attempt=attempt, reason=reason):
            _target(state, name, attempt, {S.READY, S.RUNNING, S.SUSPENDED}, S.CANCELLED)
            return [ev.StepCancelled(ts=now, step=name, reason=reason or "job cancelled")]
        case cmd.StartChild(step=name, attempt=attempt, child_job_id=child):
            _target(state, name, attempt, {S.RUNNING}, S.RUNNING)
            return [ev.ChildJobStarted(ts=now, step=name, child_job_id=child)]
        case cmd.SaveState(step=name, attempt=attempt, state=value):
            _target(state, name, attempt, {S.RUNNING}, S.RUNNING)
            return [ev.TaskStateSaved(ts=now, step=name, state=value)]
        case cmd.Pause(by=by, reason=reason):
            if state.paused:
                return []
            return [ev.JobPaused(ts=now, by=by, reason=reason)]
        case cmd.Resume(by=by):
            if not state.paused:
                return []
            return [ev.JobResumed(ts=now, by=by)]
        case cmd.Tick():
            return _tick(state, now)
    raise TypeError(f"not a command: {command!r}")  # pragma: no cover


def _target(
    state: JobState, name: str, attempt: int | None, allowed: set[StepStatus], to: StepStatus
) -> StepState:
    """The step a command addresses, checked: it exists, runs, and is at `attempt`."""
    step = state.steps.get(name)
    if step is None:
        raise NotFound(f"job {state.job_id} has no step {name!r}")
    if step.items is not None:
        raise Conflict(f"step {name} is a loop; only its instances run")
    if attempt is not None and attempt != step.attempt:
        raise Conflict(f"step {name}: stale attempt {attempt} (the current attempt is "
                       f"{step.attempt})")
    if step.status not in allowed:
        raise InvalidTransition(f"step {name}", step.status, to)
    return step


def _fail(state: JobState, command: cmd.Fail, now: float, env: Env) -> list[ev.Event]:
    name, attempt, kind = command.step, command.attempt, command.kind
    _target(state, name, attempt, {S.READY, S.RUNNING, S.SUSPENDED}, S.FAILED)
    events: list[ev.Event] = [ev.StepFailed(ts=now, step=name, attempt=attempt,
                                            error=command.error, exit_code=command.exit_code,
                                            kind=kind)]
    retry = state.plan_step(name).retry
    retried = (
        kind not in _NOT_RETRIED
        and (kind != "worker_lost" or retry.on_lost)
        and attempt < retry.max_attempts
        and not state.cancel_requested
    )
    if retried:
        at = now + retry.delay_before(attempt + 1, env.rand())
        events.append(ev.StepRetryScheduled(ts=now, step=name, attempt=attempt + 1, at=at))
    return events


def _cancel(state: JobState, by: str | None, reason: str | None, now: float) -> list[ev.Event]:
    events: list[ev.Event] = [ev.JobCancelRequested(ts=now, by=by, reason=reason)]
    for name in _order(state):
        if state.steps[name].status in (S.PENDING, S.READY, S.SUSPENDED):
            events.append(ev.StepCancelled(ts=now, step=name, reason=reason or "job cancelled"))
    return events


def _deadline(state: JobState) -> float | None:
    if state.timeout is None or state.cancel_requested:
        return None
    return (state.started_at or state.created_at) + state.timeout


def _tick(state: JobState, now: float) -> list[ev.Event]:
    deadline = _deadline(state)
    if deadline is not None and now >= deadline:
        return _cancel(state, None, f"job timed out after {state.timeout:g}s", now)
    return [
        ev.StepFailed(ts=now, step=step.name, attempt=step.attempt,
                      error="approval timed out", kind="timeout")
        for step in state.steps.values()
        if step.status is S.SUSPENDED and step.timeout_at is not None and now >= step.timeout_at
    ]


# --- advance -------------------------------------------------------------------------


class _Log:
    """Events decided so far and the state they lead to."""

    __slots__ = ("events", "state")

    def __init__(self, state: JobState) -> None:
        self.state = state
        self.events: list[ev.Event] = []

    def emit(self, event: ev.Event | None) -> None:
        if event is not None:
            self.state = evolve(self.state, event)
            self.events.append(event)


def advance(state: JobState, now: float, env: Env) -> list[ev.Event]:
    """The promotions, skips, loop expansions and the job end that follow from `state`,
    repeated until nothing changes."""
    return _advance(state, now, env, None)


def _advance(
    state: JobState, now: float, env: Env, touched: set[str] | None
) -> list[ev.Event]:
    return _advance_log(state, now, env, touched).events


def _advance_log(state: JobState, now: float, env: Env, touched: set[str] | None) -> _Log:
    """`advance`, looking only at the steps an event on `touched` can affect.

    With `touched=None` (or while a step waits for a time) every step is looked at, in
    passes over the plan order until nothing changes. Otherwise a worklist holds the
    steps affected by what changed, visited in the same order and passes, so both give
    the same events; a decision then costs what it changes, not the size of the plan.
    """
    log = _Log(state)
    if state.terminal:
        return log
    if state.status is JobStatus.PENDING and not state.cancel_requested and not state.queued:
        log.emit(ev.JobStarted(ts=now))
        touched = None
    if touched is None or state.waiting:
        _full_passes(log, now, env)
    else:
        _worklist_passes(log, now, env, touched)
    log.emit(_job_end(log.state, now))
    return log


def _visit(log: _Log, name: str, now: float, env: Env) -> bool:
    """Decide one step; whether an event was emitted."""
    state = log.state
    step = state.steps[name]
    if step.status is S.PENDING and not (state.cancel_requested or state.paused):
        event = _promote(state, step, now, env)
    elif step.status is S.RUNNING and step.items is not None:
        event = _finish_loop(state, step, now) if step.open_instances == 0 else None
    else:
        return False
    log.emit(event)
    return event is not None


def _full_passes(log: _Log, now: float, env: Env) -> None:
    while not log.state.queued:
        changed = False
        for name in _order(log.state):
            changed = _visit(log, name, now, env) or changed
        if not changed:
            break


def _worklist_passes(log: _Log, now: float, env: Env, touched: set[str]) -> None:
    index = plan_index(log.state.plan)
    current = set()
    for name in touched:
        current.update(_affected(log.state, name, index))
    while current and not log.state.queued:
        heap = [(_position(log.state, name, index), name) for name in current]
        heapq.heapify(heap)
        seen: set[str] = set()
        later: set[str] = set()
        while heap:
            position, name = heapq.heappop(heap)
            if name in seen:
                continue
            seen.add(name)
            if not _visit(log, name, now, env):
                continue
            for other in _affected(log.state, name, index):
                other_position = _position(log.state, other, index)
                if other_position > position:
                    heapq.heappush(heap, (other_position, other))
                else:
                    later.add(other)
        current = later


def _position(state: JobState, name: str, index: PlanIndex) -> tuple[int, int]:
    """Where a step comes in `_order`: its plan position, instances after their loop."""
    step = state.steps[name]
    if step.loop_of is None:
        return index.position[name], 0
    return index.position[step.loop_of], (step.loop_index or 0) + 1


def _affected(state: JobState, name: str, index: PlanIndex) -> list[str]:
    """The steps whose decision may change after something happened to `name`."""
    step = state.steps[name]
    out = [name]
    if step.loop_of is None:
        out.extend(index.dependents[name])
        if step.items is not None:
            out.extend(instance_name(name, i) for i in range(len(step.items)))
    else:
        out.append(step.loop_of)
        following = instance_name(step.loop_of, (step.loop_index or 0) + 1)
        if following in state.steps:
            out.append(following)
    return out


def _order(state: JobState) -> list[str]:
    """Step names in plan order, each loop's instances right after their placeholder."""
    instances: dict[str, list[str]] = {}
    for step in state.steps.values():
        if step.loop_of is not None:
            instances.setdefault(step.loop_of, []).append(step.name)
    order: list[str] = []
    for name in state.plan.steps:
        order.append(name)
        order.extend(instances.get(name, ()))
    return order


def dependencies(state: JobState, step: StepState) -> tuple[str, ...]:
    """What `step` waits for: its plan dependencies, or for an instance of a sequential
    loop the instance before it (a loop's dependencies were met before it expanded).

    The plan's own tuple, not a copy: a join over n branches is looked at after every
    event of each branch, and copying its n dependencies each time made that O(n)."""
    if step.loop_of is None:
        return state.plan.steps[step.name].depends_on
    index = step.loop_index or 0
    if state.plan.steps[step.loop_of].sequential and index > 0:
        return (instance_name(step.loop_of, index - 1),)
    return ()


def _promote(state: JobState, step: StepState, now: float, env: Env) -> ev.Event | None:
    """What happens to a pending step now: nothing, skipped, failed, expanded or ready."""
    if step.retry_at is not None and step.retry_at > now:
        return None
    deps = dependencies(state, step)
    # Backwards: of a join's many dependencies, the last ones usually end last, so a
    # join that is not ready yet is found so at once rather than after scanning them all.
    if not all(state.steps[dep].terminal for dep in reversed(deps)):
        return None
    name = step.name
    plan_step = state.plan_step(name)
    reason = _skip_reason(state, step, plan_step, deps)
    if reason is not None:
        return ev.StepSkipped(ts=now, step=name, reason=reason)
    try:
        if step.loop_of is None and step.attempt == 0:
            if plan_step.when is not None:
                truthy, value = env.renderer.when(state, name)
                if not truthy:
                    return ev.StepSkipped(ts=now, step=name,
                                          reason=f"when was false (rendered: {value!r})")
            if plan_step.for_each is not None:
                return _expand(state, step, now, env)
        data = env.renderer.input(state, name)
    except RenderError as exc:
        return ev.StepFailed(ts=now, step=name, attempt=step.attempt + 1, error=str(exc),
                             kind="render")
    return ev.StepReady(ts=now, step=name, input=data, attempt=step.attempt + 1)


def _skip_reason(
    state: JobState, step: StepState, plan_step: PlanStep, deps: tuple[str, ...]
) -> str | None:
    if step.loop_of is not None:
        # The only dependency of an instance is the previous instance of a sequential loop.
        stopped = any(state.steps[dep].status in (S.FAILED, S.CANCELLED, S.SKIPPED)
                      for dep in deps)
        return EARLIER_INSTANCE_FAILED if stopped and not plan_step.continue_on_failure else None
    for dep in deps:
        status = state.steps[dep].status
        covered = plan_step.continue_on_failure or state.plan.steps[dep].continue_on_failure
        if status is S.FAILED and not covered:
            return f"dependency {dep} failed"
        if status is S.CANCELLED and not covered:
            return f"dependency {dep} was cancelled"
    if deps and all(state.steps[dep].status is S.SKIPPED for dep in deps):
        return "all dependencies were skipped"
    return None


def _expand(state: JobState, step: StepState, now: float, env: Env) -> ev.Event:
    items = env.renderer.for_each(state, step.name)
    if not items:
        return ev.StepSkipped(ts=now, step=step.name, reason="for_each is empty")
    if len(items) > env.max_loop_items:
        return ev.StepFailed(ts=now, step=step.name, attempt=step.attempt + 1,
                             error=f"for_each yields {len(items)} items; the limit is "
                                   f"{env.max_loop_items}")
    return ev.LoopExpanded(ts=now, step=step.name, items=tuple(items))


def _finish_loop(state: JobState, step: StepState, now: float) -> ev.Event | None:
    """A loop placeholder ends when all its instances have."""
    instances = state.instances(step.name)  # all terminal: `open_instances` is 0
    if not state.plan.steps[step.name].continue_on_failure:
        for i in instances:
            if i.status is S.FAILED:
                return ev.StepFailed(ts=now, step=step.name, attempt=max(step.attempt, 1),
                                     error=f"instance {i.name} failed: {i.error}")
    for i in instances:
        if i.status is S.CANCELLED:
            return ev.StepCancelled(ts=now, step=step.name,
                                    reason=f"instance {i.name} was cancelled")
    outputs = [i.output if i.status is S.COMPLETED else None for i in instances]
    return ev.StepCompleted(ts=now, step=step.name, output=outputs)


def _job_end(state: JobState, now: float) -> ev.Event | None:
    if state.open_steps:
        return None
    if state.cancel_requested:
        return ev.JobCancelled(ts=now, reason=state.cancel_reason or "cancelled")
    for name in _order(state):
        step = state.steps[name]
        if step.status is S.FAILED and not state.plan_step(name).continue_on_failure:
            return ev.JobFailed(ts=now, error=f"step {name} failed: {step.error}")
        if step.status is S.CANCELLED:
            return ev.JobFailed(ts=now, error=f"step {name} was cancelled")
    output = {
        leaf: state.steps[leaf].output
        for leaf in state.plan.leaves()
        if state.steps[leaf].status is not S.SKIPPED
    }
    return ev.JobCompleted(ts=now, output=output)


# --- queries -------------------------------------------------------------------------


def next_wakeup(state: JobState) -> float | None:
    """The earliest time at which a `Tick` would change something, or None."""
    if state.terminal:
        return None
    times: list[float] = []
    deadline = _deadline(state)
    if deadline is not None:
        times.append(deadline)
    if not state.waiting:
        return min(times, default=None)
    for step in state.steps.values():
        if (step.status is S.PENDING and step.retry_at is not None
                and not (state.cancel_requested or state.paused)):
            times.append(step.retry_at)
        elif step.status is S.SUSPENDED and step.timeout_at is not None:
            times.append(step.timeout_at)
    return min(times, default=None)


def dispatchable(state: JobState) -> list[str]:
    """Names of the steps that are ready to run, in plan order (none while paused)."""
    if state.paused:
        return []
    return [name for name in _order(state) if state.steps[name].status is S.READY]
