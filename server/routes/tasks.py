"""`/api/workspaces/{ws}/tasks`: the tasks of a workspace, their detail, and execute."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.auth.acl import Level
from engine.errors import Issue, NotFound, ValidationFailed
from engine.model import StepSpec, TaskSpec
from server.auth import actor, require_task, task_level
from server.errors import ORJSONResponse
from server.openapi import Endpoint
from server.routes import field_of, listing, path_param, read_json, runtime_of
from server.routes.workspaces import TRIGGER_SCHEMA, get_workspace, trigger_view

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200


def _step_view(step: StepSpec) -> dict[str, Any]:
    data = step.model_dump(mode="json", exclude_defaults=True, exclude={"inline"})
    if step.inline is not None:
        # An inline action is shown as written: its fields sit in the step itself.
        inline = step.inline.model_dump(mode="json", exclude_defaults=True, exclude={"input"})
        inline.setdefault("type", step.inline.type)
        data = {**inline, **data}
    return data


def _task_summary(ws_name: str, name: str, task: TaskSpec, triggered: set[str]) -> dict[str, Any]:
    view: dict[str, Any] = {"name": name, "workspace": ws_name, "mode": task.mode,
                            "has_triggers": name in triggered}
    if task.folder is not None:
        view["folder"] = task.folder
    if task.description is not None:
        view["description"] = task.description
    return view


async def list_tasks(request: Request) -> Response:
    ws = get_workspace(request)
    spec = ws.require().spec
    triggered = {t.task for t in spec.triggers.values() if t.enabled}
    items = [_task_summary(ws.name, name, task, triggered) for name, task in spec.tasks.items()
             if task_level(request, ws.name, name) >= Level.VIEW]
    return listing(items, len(items))


async def task_detail(request: Request) -> Response:
    ws = get_workspace(request)
    spec = ws.require().spec
    name = path_param(request, "name")
    task = spec.tasks.get(name)
    if task is None:
        raise NotFound(f"task {name!r} not found in workspace {ws.name!r}")
    require_task(request, ws.name, name, Level.VIEW)
    view: dict[str, Any] = {
        "name": name,
        "workspace": ws.name,
        "mode": task.mode,
        "input": {k: {"type": f.type, **f.model_dump(mode="json", exclude_defaults=True)}
                  for k, f in task.input.items()},
        "flow": {k: _step_view(s) for k, s in task.flow.items()},
        "triggers": [trigger_view(t_name, t) for t_name, t in spec.triggers.items()
                     if t.task == name],
        "priority": task.priority,
        **(await runtime_of(request).orchestrator.ops.state(ws.name)).view(name),
    }
    if task.folder is not None:
        view["folder"] = task.folder
    if task.description is not None:
        view["description"] = task.description
    return ORJSONResponse(view)


async def execute_task(request: Request) -> Response:
    ws = get_workspace(request)
    name = path_param(request, "name")
    require_task(request, ws.name, name, Level.RUN)
    body = await read_json(request)
    raw_input = field_of(body, "input", dict, "an object")
    priority = field_of(body, "priority", int, "an integer from 1 (highest) to 5")
    if priority is not None and not 1 <= priority <= 5:
        raise ValidationFailed(issues=[Issue(
            message="'priority' must be an integer from 1 (highest) to 5", path="priority")])
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise ValidationFailed(issues=[Issue(
            message=f"must be 1 to {MAX_KEY_LENGTH} characters", path=IDEMPOTENCY_HEADER)])
    job_id = await runtime_of(request).orchestrator.create_job(
        ws.name, name, raw_input or {}, source_type="api", idempotency_key=key or None,
        by=actor(request), priority=priority,
    )
    return ORJSONResponse({"job_id": job_id})


_TASK = {"type": "object", "properties": {
    "name": {"type": "string"}, "workspace": {"type": "string"}, "mode": {"type": "string"},
    "has_triggers": {"type": "boolean"}, "folder": {"type": "string"},
}}
_DETAIL = {"type": "object", "properties": {
    "name": {"type": "string"}, "mode": {"type": "string"}, "input": {"type": "object"},
    "flow": {"type": "object"}, "triggers": {"type": "array", "items": TRIGGER_SCHEMA},
}}

ENDPOINTS = (
    Endpoint("GET", "/api/workspaces/{ws}/tasks", list_tasks, "List a workspace's tasks",
             (200, 404, 409), response={"type": "array", "items": _TASK}, tag="tasks"),
    Endpoint("GET", "/api/workspaces/{ws}/tasks/{name}", task_detail,
             "A task: input schema, flow, triggers with next runs", (200, 404, 409),
             response=_DETAIL, tag="tasks"),
    Endpoint("POST", "/api/workspaces/{ws}/tasks/{name}/execute", execute_task,
             "Create a job of a task", (200, 400, 404, 409, 413),
             body={"type": "object", "properties": {
                 "input": {"type": "object"},
                 "priority": {"type": "integer", "minimum": 1, "maximum": 5}}},
             response={"type": "object", "properties": {"job_id": {"type": "string"}}},
             headers=(IDEMPOTENCY_HEADER,), tag="tasks"),
)
