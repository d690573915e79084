"""Why a job's steps have not run: `explain(state, context)` (pure).

For every step that has not run (pending, ready, waiting for approval, skipped,
cancelled) it names the exact reason, derived from the job's state: a dependency still
running, a `when` that was false (with its rendered value, taken from the `StepSkipped`
reason), a failed dependency, a retry scheduled at a time, an approval, an operator's
pause. What the job's events cannot know — which workers are online, who holds a
concurrency slot, a rate limit — comes in an optional `ExplainContext` from whoever
knows it (the work queue, the concurrency module); a reason that needs it is only given
when it is there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.core.decide import EARLIER_INSTANCE_FAILED, dependencies
from engine.core.projections import job_status
from engine.core.state import JobState, StepState, StepStatus

S = StepStatus
_Make = Callable[..., "Reason"]


@dataclass(frozen=True, slots=True)
class ExplainContext:
    """What is known about a job beyond its events (every field optional).

    `workers_online`: the tag sets of the workers online now (None: not known, e.g. the
    embedded executor, which runs every step); `job_slot_held_by`: the jobs holding the
    concurrency slots a queued job waits for; `step_slot_held_by`: per ready step, the
    jobs holding the slot it waits for; `rate_limited_until`: per ready step, when its
    rate limit lets it run; `scope_paused`: why a queued job's workspace or task holds
    it (an operator paused it).
    """

    now: float | None = None
    workers_online: Sequence[frozenset[str]] | None = None
    job_slot_held_by: Sequence[str] = ()
    step_slot_held_by: Mapping[str, Sequence[str]] = field(default_factory=dict)
    rate_limited_until: Mapping[str, float] = field(default_factory=dict)
    scope_paused: str | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    """Why one step has not run: a stable `code`, a sentence, and the facts behind it."""

    step: str
    status: str
    code: str
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "status": self.status, "code": self.code,
                "reason": self.reason, **dict(self.details)}


@dataclass(frozen=True, slots=True)
class Explanation:
    """A job's status, why the job as a whole waits (if it does), and its steps' reasons."""

    job_id: str
    status: str
    job_reason: str | None
    steps: tuple[Reason, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "status": self.status, "reason": self.job_reason,
                "steps": [r.to_dict() for r in self.steps]}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def explain(state: JobState, context: ExplainContext | None = None) -> Explanation:
    """The reasons of every step of `state` that has not run, in plan order."""
    ctx = context or ExplainContext()
    reasons = tuple(
        reason for step in _ordered(state)
        if (reason := explain_step(state, step, ctx)) is not None
    )
    return Explanation(state.job_id, job_status(state), _job_reason(state, ctx), reasons)


def _ordered(state: JobState) -> list[StepState]:
    order: list[StepState] = []
    for name in state.plan.steps:
        order.append(state.steps[name])
        order.extend(state.instances(name))
    return order


def _job_reason(state: JobState, ctx: ExplainContext) -> str | None:
    if state.terminal:
        return f"job {state.status.value}" + (f": {state.error}" if state.error else "")
    if state.paused:
        return "job paused" + (f" by {state.paused_by}" if state.paused_by else "")
    if state.cancel_requested:
        return "job is being cancelled"
    if state.queued:
        if ctx.scope_paused:
            return ctx.scope_paused
        if ctx.job_slot_held_by:
            return "concurrency slot held by job " + ", ".join(ctx.job_slot_held_by)
        return "waiting for a concurrency slot of its task"
    return None


_DEP_FAILED = re.compile(r"^dependency (?P<dep>.+) (?P<how>failed|was cancelled)$")
_WHEN_FALSE = re.compile(r"^when was false \(rendered: (?P<value>.*)\)$", re.DOTALL)


def explain_step(state: JobState, step: StepState, ctx: ExplainContext) -> Reason | None:
    """Why `step` has not run, or None when it ran (or runs)."""
    status = step.status.value

    def reason(code: str, text: str, **details: Any) -> Reason:
        return Reason(step.name, status, code, text, details)

    match step.status:
        case S.SKIPPED:
            return _skipped(step, reason)
        case S.CANCELLED:
            by = f" by {state.cancelled_by}" if state.cancelled_by else ""
            return reason("cancelled", f"cancelled{by}: {step.error or 'job cancelled'}",
                          by=state.cancelled_by)
        case S.SUSPENDED:
            text = "waiting for approval" + (f": {step.message}" if step.message else "")
            extra = {"timeout_at": iso(step.timeout_at)} if step.timeout_at else {}
            return reason("waiting_for_approval", text, message=step.message, **extra)
        case S.PENDING:
            return _pending(state, step, ctx, reason)
        case S.READY:
            return _ready(state, step, ctx, reason)
    return None


def _skipped(step: StepState, reason: _Make) -> Reason:
    text = step.skip_reason or "skipped"
    if match := _WHEN_FALSE.match(text):
        return reason("when_false", text, rendered=match["value"])
    if match := _DEP_FAILED.match(text):
        code = "dependency_failed" if match["how"] == "failed" else "dependency_cancelled"
        return reason(code, f"skipped because {match['dep']} {match['how']}",
                      dependency=match["dep"])
    if text == "all dependencies were skipped":
        return reason("dependencies_skipped", text)
    if text == "for_each is empty":
        return reason("empty_loop", text)
    if text == EARLIER_INSTANCE_FAILED:
        return reason("earlier_instance_failed", text)
    return reason("skipped", text)


def _pending(state: JobState, step: StepState, ctx: ExplainContext, reason: _Make) -> Reason:
    if state.cancel_requested:
        return reason("job_cancelling", "job is being cancelled")
    if state.queued:
        text = _job_reason(state, ctx) or "job queued"
        return reason("job_queued", text, held_by=list(ctx.job_slot_held_by))
    waiting = [dep for dep in dependencies(state, step) if not state.steps[dep].terminal]
    if waiting:
        noun = "dependency" if len(waiting) == 1 else "dependencies"
        return reason("waiting_for_dependency", f"waiting for {noun} {', '.join(waiting)}",
                      dependencies=waiting)
    if step.retry_at is not None:
        text = f"retry scheduled at {iso(step.retry_at)} (attempt {step.attempt + 1})"
        if step.error:
            text += f"; the last attempt failed: {step.error}"
        if state.paused:
            text += "; the job is paused"
        return reason("retry_scheduled", text, retry_at=iso(step.retry_at),
                      attempt=step.attempt + 1, last_error=step.error)
    if state.paused:
        return _paused(state, reason)
    return reason("pending", "about to be made ready")


def _paused(state: JobState, reason: _Make) -> Reason:
    by = f" by {state.paused_by}" if state.paused_by else ""
    return reason("job_paused", f"job paused{by}", by=state.paused_by)


def _ready(state: JobState, step: StepState, ctx: ExplainContext, reason: _Make) -> Reason:
    if state.paused:
        return _paused(state, reason)
    holders = ctx.step_slot_held_by.get(step.name)
    if holders:
        return reason("concurrency_slot", "concurrency slot held by job " + ", ".join(holders),
                      held_by=list(holders))
    until = ctx.rate_limited_until.get(step.name)
    if until is not None and (ctx.now is None or until > ctx.now):
        return reason("rate_limited", f"rate limit until {iso(until)}", until=iso(until))
    tags = frozenset(state.plan_step(step.name).tags)
    if ctx.workers_online is not None and not any(tags <= w for w in ctx.workers_online):
        shown = "{" + ", ".join(sorted(tags)) + "}"
        text = (f"no worker with tags {shown} is online" if tags
                else "no worker is online")
        return reason("no_worker", text, tags=sorted(tags))
    return reason("waiting_for_worker", "ready; waiting for a free worker slot")
