"""Control and explainability: explain, dry-run, pause/resume and job diff.

`GET /api/jobs/{id}/explain`, `POST /api/workspaces/{ws}/tasks/{name}/dry-run`,
`POST /api/jobs/{id}/pause`, `POST /api/jobs/{id}/resume`, `GET /api/jobs/{a}/diff/{b}`.
Thin: the engine's pure functions (`engine.explain`, `engine.dryrun`, `engine.jobdiff`)
and orchestrator commands do the work.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.auth.acl import Level
from engine.core import commands as cmd
from engine.core.projections import JobRow, job_status
from engine.core.state import JobState
from engine.dryrun import dry_run
from engine.errors import Conflict, NotFound, ValidationFailed
from engine.explain import ExplainContext, explain
from engine.jobdiff import diff_jobs
from engine.logs.store import check_job_id
from engine.masking import mask_value
from engine.runtime import Runtime
from server.auth import actor, require_job, require_task
from server.errors import ORJSONResponse
from server.openapi import Endpoint
from server.routes import field_of, path_param, read_json, runtime_of
from server.routes.jobs import get_row
from server.routes.workspaces import get_workspace

log = logging.getLogger("partitur.control")


async def explain_context(runtime: Runtime, state: JobState) -> ExplainContext:
    """What the runtime knows besides the job's events: the jobs holding the concurrency
    slots a queued job waits for (on any replica: the slots are in the store), and (with
    remote workers only) the workers online."""
    now = runtime.orchestrator.clock.now()
    holders: list[str] = []
    if state.queued:
        try:
            holders = await runtime.orchestrator.concurrency.holders(state)
        except Exception:  # best effort: the explanation still stands without names
            log.debug("no concurrency holders for job %s", state.job_id, exc_info=True)
    workers: list[frozenset[str]] | None = None
    if runtime.executor is None and runtime.queue is not None:
        rows, _ = await runtime.queue.work.workers(1000, 0)
        cutoff = now - runtime.options.lease_timeout
        workers = [frozenset(w.tags) for w in rows if w.last_heartbeat >= cutoff]
    scope_paused = runtime.orchestrator.ops.reason(state.workspace, state.task)
    step_holders: dict[str, list[str]] = {}
    rate_limited: dict[str, float] = {}
    executor = runtime.executor
    if executor is not None:
        rate_limited = executor.rates.until(state.job_id)
        waiting = [step for job, step in executor.slot_waiting if job == state.job_id]
        if waiting:
            held = list(dict.fromkeys(
                job for job in executor.slot_holders() if job != state.job_id))
            step_holders = {step: held for step in waiting if held}
    elif runtime.queue is not None:
        rate_limited = runtime.queue.rates.until(state.job_id)
    return ExplainContext(now=now, workers_online=workers, job_slot_held_by=holders,
                          step_slot_held_by=step_holders, rate_limited_until=rate_limited,
                          scope_paused=scope_paused if state.queued else None)


async def explain_job(request: Request) -> Response:
    row = await get_row(request)
    runtime = runtime_of(request)
    state = await runtime.orchestrator.get_state(row.job_id)
    explanation = explain(state, await explain_context(runtime, state)).to_dict()
    explanation["paused_by"] = state.paused_by
    # Errors and rendered `when` values come from the events, which may quote a
    # secret-marked input as given.
    return ORJSONResponse(mask_value(explanation, runtime.orchestrator.redactor(state)))


async def dry_run_task(request: Request) -> Response:
    ws = get_workspace(request)
    name = path_param(request, "name")
    require_task(request, ws.name, name, Level.RUN)
    body = await read_json(request)
    raw_input = field_of(body, "input", dict, "an object")
    runtime = runtime_of(request)
    task_state = await runtime.orchestrator.task_states.latest(ws.name, name)
    result = dry_run(ws, name, raw_input or {}, now=runtime.orchestrator.clock.now(),
                     task_state=task_state)
    return ORJSONResponse(result.to_dict())


async def _control(request: Request, command: cmd.Pause | cmd.Resume) -> Response:
    row = await get_row(request)
    require_job(request, row, Level.RUN)
    orch = runtime_of(request).orchestrator
    state = await orch.get_state(row.job_id)
    if state.terminal:
        raise Conflict(f"job {row.job_id} has already ended ({state.status.value})")
    state = await orch.command(row.job_id, command)
    return ORJSONResponse({"job_id": row.job_id, "status": job_status(state),
                           "paused": state.paused, "paused_by": state.paused_by})


async def pause_job(request: Request) -> Response:
    body = await read_json(request)
    reason = field_of(body, "reason", str, "a string")
    return await _control(request, cmd.Pause(by=actor(request), reason=reason))


async def resume_job(request: Request) -> Response:
    await read_json(request)
    return await _control(request, cmd.Resume(by=actor(request)))


async def _row(request: Request, job_id: str) -> JobRow:
    try:
        check_job_id(job_id)
    except ValidationFailed:
        raise NotFound(f"job {job_id!r} not found") from None
    row = await runtime_of(request).store.get_job(job_id)
    if row is None:
        raise NotFound(f"job {job_id!r} not found")
    require_job(request, row)
    return row


async def diff(request: Request) -> Response:
    runtime = runtime_of(request)
    a = await _row(request, path_param(request, "a"))
    b = await _row(request, path_param(request, "b"))
    if a.job_id == b.job_id:
        raise NotFound("a job diff needs two different jobs")
    result = diff_jobs(a, await runtime.store.get_steps(a.job_id),
                       b, await runtime.store.get_steps(b.job_id))
    return ORJSONResponse(result)


_STEP_REASON = {"type": "object", "properties": {
    "step": {"type": "string"}, "status": {"type": "string"}, "code": {"type": "string"},
    "reason": {"type": "string"}}}
_EXPLAIN = {"type": "object", "properties": {
    "job_id": {"type": "string"}, "status": {"type": "string"},
    "reason": {"type": ["string", "null"]},
    "steps": {"type": "array", "items": _STEP_REASON}}}
_DRY_RUN = {"type": "object", "properties": {
    "workspace": {"type": "string"}, "task": {"type": "string"},
    "revision": {"type": "string"}, "input": {"type": "object"},
    "steps": {"type": "array", "items": {"type": "object", "properties": {
        "step": {"type": "string"},
        "action": {"type": "string",
                   "enum": ["run", "skip", "expand", "fail", "at_run_time"]},
        "input": {}, "reason": {"type": ["string", "null"]}}}}}}
_CONTROL = {"type": "object", "properties": {
    "job_id": {"type": "string"}, "status": {"type": "string"},
    "paused": {"type": "boolean"}, "paused_by": {"type": ["string", "null"]}}}
_DIFF: dict[str, Any] = {"type": "object", "properties": {
    "a": {"type": "string"}, "b": {"type": "string"}, "input": {"type": "object"},
    "output": {"type": "object"}, "duration": {"type": "object"},
    "steps": {"type": "array", "items": {"type": "object"}},
    "summary": {"type": "object"}}}

ENDPOINTS = (
    Endpoint("GET", "/api/jobs/{id}/explain", explain_job,
             "Why each step that has not run has not run", (200, 404),
             response=_EXPLAIN, tag="jobs"),
    Endpoint("POST", "/api/jobs/{id}/pause", pause_job,
             "Pause a job: running steps finish, no new step starts", (200, 400, 404, 409),
             body={"type": "object", "properties": {"reason": {"type": "string"}}},
             response=_CONTROL, tag="jobs"),
    Endpoint("POST", "/api/jobs/{id}/resume", resume_job, "Resume a paused job",
             (200, 400, 404, 409), response=_CONTROL, tag="jobs"),
    Endpoint("GET", "/api/jobs/{a}/diff/{b}", diff,
             "Compare two jobs: inputs, step statuses, outputs and durations", (200, 404),
             response=_DIFF, tag="jobs"),
    Endpoint("POST", "/api/workspaces/{ws}/tasks/{name}/dry-run", dry_run_task,
             "What a job would do with this input; nothing runs, no job is recorded",
             (200, 400, 404, 409, 413),
             body={"type": "object", "properties": {"input": {"type": "object"}}},
             response=_DRY_RUN, tag="tasks"),
)
