"""`/api/jobs`: the job list and detail, the event history, cancel, approve and rerun."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.auth.acl import Level
from engine.core import commands as cmd
from engine.core.events import RecordedEvent
from engine.core.projections import JobRow
from engine.core.state import JobStatus, StepStatus, fold
from engine.errors import Conflict, InputInvalid, Issue, NotFound, ValidationFailed
from engine.logs.store import check_job_id
from engine.masking import JobMasker
from engine.model import InputField
from engine.store.base import JobFilter
from engine.stuck import stuck_ids
from engine.views import iso, job_detail, job_summary
from server.auth import actor, require_job, restricted, visible_rows
from server.errors import ORJSONResponse
from server.openapi import Endpoint, Param
from server.routes import (
    field_of,
    listing,
    path_param,
    query_int,
    query_time,
    read_json,
    runtime_of,
)

_STATUSES = frozenset(s.value for s in JobStatus)
ACL_SCAN_LIMIT = 100_000


async def get_row(request: Request) -> JobRow:
    """The job named by the `id` path parameter (404 when unknown)."""
    job_id = _job_id(request)
    return _viewable(request, job_id, await runtime_of(request).store.get_job(job_id))


def _job_id(request: Request) -> str:
    """The `id` path parameter, when it can name a job at all (404 otherwise)."""
    job_id = path_param(request, "id")
    try:
        check_job_id(job_id)
    except ValidationFailed:
        raise NotFound(f"job {job_id!r} not found") from None
    return job_id


def _viewable(request: Request, job_id: str, row: JobRow | None) -> JobRow:
    """`row`, if there is one and the caller may view it (404 / 403 otherwise)."""
    if row is None:
        raise NotFound(f"job {job_id!r} not found")
    require_job(request, row)
    return row


def _filter(request: Request) -> JobFilter:
    q = request.query_params
    statuses = tuple(s.strip() for s in (q.get("status") or "").split(",") if s.strip())
    unknown = [s for s in statuses if s not in _STATUSES]
    if unknown:
        raise ValidationFailed(issues=[Issue(
            message=f"unknown status {', '.join(unknown)} (one of {', '.join(sorted(_STATUSES))})",
            path="status")])
    if q.get("task_name") and not q.get("workspace"):
        raise ValidationFailed(issues=[Issue(message="'task_name' requires 'workspace'",
                                             path="task_name")])
    return JobFilter(
        workspace=q.get("workspace") or None, task_name=q.get("task_name") or None,
        status=statuses, source_type=q.get("source_type") or None,
        since=query_time(request, "since"), limit=query_int(request, "limit", 50),
        offset=query_int(request, "offset", 0, maximum=2**31),
    )


async def list_jobs(request: Request) -> Response:
    where = _filter(request)
    store = runtime_of(request).store
    if not restricted(request):
        rows, total = await store.list_jobs(where)
        return listing(await _summaries(request, rows), total)
    # An ACL applies: count and page over the jobs the caller may view.
    everything, _ = await store.list_jobs(replace(where, limit=ACL_SCAN_LIMIT, offset=0))
    rows = visible_rows(request, everything)
    page = rows[where.offset:where.offset + where.limit]
    return listing(await _summaries(request, page), len(rows))


async def _summaries(request: Request, rows: list[JobRow]) -> list[dict[str, Any]]:
    """Job list entries; with `stuck_after` configured each says whether it is stuck."""
    items = [job_summary(r) for r in rows]
    after = getattr(request.app.state.settings, "stuck_after", None)
    if after:
        stuck = await stuck_ids(runtime_of(request).orchestrator, rows, float(after))
        for item in items:
            item["stuck"] = item["job_id"] in stuck
    return items


_AUDITED = {"JobCreated": "executed", "JobCancelRequested": "cancelled",
            "StepApproved": "approved", "StepRejected": "rejected"}


def audit_trail(records: list[RecordedEvent]) -> list[dict[str, Any]]:
    """Who executed, re-ran, cancelled, approved or rejected the job, from its events."""
    trail: list[dict[str, Any]] = []
    for record in records:
        action = _AUDITED.get(record.type)
        if action is None:
            continue
        data = record.data
        if record.type == "JobCreated" and data.get("retry_of"):
            action = "reran"
        entry: dict[str, Any] = {"action": action, "by": data.get("by"), "at": iso(record.ts)}
        if data.get("step"):
            entry["step"] = data["step"]
        trail.append(entry)
    return trail


async def get_job(request: Request) -> Response:
    job_id = _job_id(request)
    # One store call (one statement on PostgreSQL); nothing is shown before the row is
    # known to exist and the caller is allowed to view it.
    found = await runtime_of(request).store.job_detail(job_id, _AUDITED)
    row = _viewable(request, job_id, found.job if found is not None else None)
    assert found is not None  # _viewable raised NotFound otherwise
    detail = job_detail(row, found.steps, found.children)
    detail["audit"] = audit_trail(found.events)
    return ORJSONResponse(detail)


async def job_events(request: Request) -> Response:
    """The stored events, with the job's secrets masked: `JobCreated.input` and rendered
    step inputs hold the real values of input fields marked `secret`."""
    row = await get_row(request)
    runtime = runtime_of(request)
    records = await runtime.store.read(row.job_id)
    state = fold(r.event() for r in records)
    masker = JobMasker(runtime.orchestrator.redactor(state), state.secret_paths)
    items = [{**masker.event(r.to_dict()), "time": iso(r.ts)} for r in records]
    return listing(items, len(items))


async def cancel_job(request: Request) -> Response:
    row = await get_row(request)
    require_job(request, row, Level.RUN)
    body = await read_json(request)
    reason = field_of(body, "reason", str, "a string")
    orch = runtime_of(request).orchestrator
    state = await orch.get_state(row.job_id)
    if state.terminal:
        raise Conflict(f"job {row.job_id} has already ended ({state.status.value})")
    state = await orch.command(row.job_id,
                               cmd.Cancel(by=actor(request), reason=reason or "cancelled via API"))
    return ORJSONResponse({"job_id": row.job_id, "status": state.status.value,
                           "cancel_requested": state.cancel_requested})


def _approval_schema(action: Any) -> dict[str, InputField]:
    schema = action.get("input") if isinstance(action, dict) else None
    if not isinstance(schema, dict):
        return {}
    return {name: InputField.model_validate(spec) for name, spec in schema.items()}


async def approve_step(request: Request) -> Response:
    from engine.compiler.inputs import coerce_input

    row = await get_row(request)
    require_job(request, row, Level.RUN)
    step_name = path_param(request, "step")
    body = await read_json(request)
    approved = field_of(body, "approved", bool, "a boolean")
    data = field_of(body, "input", dict, "an object") or {}
    reason = field_of(body, "rejection_reason", str, "a string")
    orch = runtime_of(request).orchestrator
    state = await orch.get_state(row.job_id)
    step = state.steps.get(step_name)
    if step is None:
        raise NotFound(f"job {row.job_id} has no step {step_name!r}")
    if step.status != StepStatus.SUSPENDED:
        raise Conflict(f"step {step_name} is {step.status.value}, not waiting for approval")
    if approved is False:
        command: cmd.Command = cmd.Reject(step=step_name, by=actor(request), reason=reason)
    else:
        action = state.plan_step(step_name).action
        try:
            schema = _approval_schema(action)
        except ValueError:
            schema = {}
        try:
            # What the step was given stands unless the approver sends a new value.
            values = coerce_input(schema, {**(step.input or {}), **data})
        except InputInvalid as exc:
            raise InputInvalid(issues=[Issue(message=i.message, path=f"input.{i.path}",
                                             hint=i.hint) for i in exc.issues]) from None
        command = cmd.Approve(step=step_name, by=actor(request), input=values)
    state = await orch.command(row.job_id, command)
    after = state.steps[step_name]
    return ORJSONResponse({"job_id": row.job_id, "step": step_name,
                           "status": after.status.value})


async def rerun_job(request: Request) -> Response:
    row = await get_row(request)
    require_job(request, row, Level.RUN)
    body = await read_json(request)
    from_step = field_of(body, "from_step", str, "a string")
    raw_input = field_of(body, "input", dict, "an object")
    changes = field_of(body, "input_changes", dict, "an object")
    orch = runtime_of(request).orchestrator
    if changes is not None:
        if raw_input is not None:
            raise ValidationFailed(issues=[Issue(
                message="give 'input' (the whole input) or 'input_changes', not both",
                path="input_changes")])
        # Over the original's own values, so a secret input keeps its unmasked value.
        raw_input = {**(await orch.get_state(row.job_id)).input, **changes}
    new_id = await orch.rerun(
        row.job_id, from_step=from_step, raw_input=raw_input, by=actor(request))
    return ORJSONResponse({"job_id": new_id})


_JOB_FIELDS: dict[str, Any] = {
    "job_id": {"type": "string"}, "workspace": {"type": "string"},
    "task_name": {"type": "string"}, "mode": {"type": "string"}, "status": {"type": "string"},
    "source_type": {"type": "string"}, "source_id": {"type": ["string", "null"]},
    "created_at": {"type": "string"}, "started_at": {"type": ["string", "null"]},
    "completed_at": {"type": ["string", "null"]},
}
_JOB = {"type": "object", "properties": _JOB_FIELDS}
_STEP = {"type": "object", "properties": {
    "step_name": {"type": "string"}, "action_name": {"type": "string"},
    "action_type": {"type": "string"}, "runner": {"type": "string"},
    "input": {}, "output": {}, "status": {"type": "string"},
    "worker_id": {"type": ["string", "null"]}, "started_at": {"type": ["string", "null"]},
    "completed_at": {"type": ["string", "null"]}, "error_message": {"type": ["string", "null"]},
    "attempt": {"type": "integer"}, "loop_index": {"type": ["integer", "null"]},
}}
_DETAIL = {"type": "object", "properties": {
    **_JOB_FIELDS, "input": {"type": "object"},
    "steps": {"type": "array", "items": _STEP},
}}
_JOB_ID = {"type": "object", "properties": {"job_id": {"type": "string"}}}
_STEP_RESULT = {"type": "object", "properties": {
    "job_id": {"type": "string"}, "step": {"type": "string"}, "status": {"type": "string"}}}

ENDPOINTS = (
    Endpoint("GET", "/api/jobs", list_jobs, "List jobs, newest first", (200, 400),
             query=(
                 Param("workspace", "Filter by workspace name"),
                 Param("task_name", "Filter by task name (requires workspace)"),
                 Param("status", "Comma-separated job statuses"),
                 Param("source_type", "api, user, trigger, webhook, hook or task"),
                 Param("since", "Only jobs created at or after this ISO 8601 time",
                       {"type": "string", "format": "date-time"}),
                 Param("limit", "Number of jobs to return (default 50, max 1000)",
                       {"type": "integer", "minimum": 0}),
                 Param("offset", "Pagination offset", {"type": "integer", "minimum": 0}),
             ), response={"type": "array", "items": _JOB}, tag="jobs"),
    Endpoint("GET", "/api/jobs/{id}", get_job, "Job detail with every step", (200, 404),
             response=_DETAIL, tag="jobs"),
    Endpoint("GET", "/api/jobs/{id}/events", job_events, "The job's event history",
             (200, 404), response={"type": "array", "items": {"type": "object"}}, tag="jobs"),
    Endpoint("POST", "/api/jobs/{id}/cancel", cancel_job, "Cancel a job",
             (200, 400, 404, 409, 413),
             body={"type": "object", "properties": {"reason": {"type": "string"}}},
             response={"type": "object"}, tag="jobs"),
    Endpoint("POST", "/api/jobs/{id}/steps/{step}/approve", approve_step,
             "Approve or reject a step waiting for approval", (200, 400, 404, 409, 413),
             body={"type": "object", "properties": {
                 "approved": {"type": "boolean"}, "input": {"type": "object"},
                 "rejection_reason": {"type": "string"}}},
             response=_STEP_RESULT, tag="jobs"),
    Endpoint("POST", "/api/jobs/{id}/rerun", rerun_job,
             "Run the job's task again, optionally resuming from a step",
             (200, 400, 404, 409, 413),
             body={"type": "object", "properties": {
                 "from_step": {"type": "string"}, "input": {"type": "object"},
                 "input_changes": {"type": "object"}}},
             response=_JOB_ID, tag="jobs"),
)
