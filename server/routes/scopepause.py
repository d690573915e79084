"""Pausing a whole workspace or one task: `POST /api/workspaces/{ws}/pause|resume` and
`POST /api/workspaces/{ws}/tasks/{name}/pause|resume`.

Thin: `engine.opspause` records the events and starts held jobs on resume. Pausing a
workspace needs an administrator when auth is on; pausing a task needs the right to run it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from engine.auth.acl import Level
from engine.errors import NotFound
from server.auth import actor, auth_enabled, require_admin, require_task
from server.errors import ORJSONResponse
from server.openapi import Endpoint
from server.routes import field_of, path_param, read_json, runtime_of
from server.routes.workspaces import get_workspace


def _task(request: Request, workspace: str) -> str:
    name = path_param(request, "name")
    ws = runtime_of(request).workspaces.get(workspace)
    if name not in ws.require().spec.tasks:
        raise NotFound(f"task {name!r} not found in workspace {workspace!r}")
    require_task(request, workspace, name, Level.RUN)
    return name


async def _change(request: Request, *, task_scope: bool, pause: bool) -> Response:
    ws = get_workspace(request)
    task = _task(request, ws.name) if task_scope else None
    if not task_scope and auth_enabled(request):
        require_admin(request)
    body = await read_json(request)
    ops = runtime_of(request).orchestrator.ops
    if pause:
        reason = field_of(body, "reason", str, "a string")
        state = await ops.pause(ws.name, task, by=actor(request), reason=reason)
    else:
        state = await ops.resume(ws.name, task, by=actor(request))
    view = {"workspace": ws.name, **({"task": task} if task else {}), **state.view(task)}
    return ORJSONResponse(view)


async def pause_workspace(request: Request) -> Response:
    return await _change(request, task_scope=False, pause=True)


async def resume_workspace(request: Request) -> Response:
    return await _change(request, task_scope=False, pause=False)


async def pause_task(request: Request) -> Response:
    return await _change(request, task_scope=True, pause=True)


async def resume_task(request: Request) -> Response:
    return await _change(request, task_scope=True, pause=False)


_BODY = {"type": "object", "properties": {"reason": {"type": "string"}}}
_VIEW = {"type": "object", "properties": {
    "workspace": {"type": "string"}, "task": {"type": "string"},
    "paused": {"type": "boolean"}, "paused_by": {"type": ["string", "null"]},
    "paused_at": {"type": "number"}, "reason": {"type": ["string", "null"]}}}

ENDPOINTS = (
    Endpoint("POST", "/api/workspaces/{ws}/pause", pause_workspace,
             "Pause a workspace: no new job of it starts (new ones queue until resumed)",
             (200, 400, 404), body=_BODY, response=_VIEW, tag="workspaces"),
    Endpoint("POST", "/api/workspaces/{ws}/resume", resume_workspace,
             "Resume a paused workspace; its queued jobs start", (200, 400, 404),
             response=_VIEW, tag="workspaces"),
    Endpoint("POST", "/api/workspaces/{ws}/tasks/{name}/pause", pause_task,
             "Pause a task: no new job of it starts (new ones queue until resumed)",
             (200, 400, 404, 409), body=_BODY, response=_VIEW, tag="tasks"),
    Endpoint("POST", "/api/workspaces/{ws}/tasks/{name}/resume", resume_task,
             "Resume a paused task; its queued jobs start", (200, 400, 404, 409),
             response=_VIEW, tag="tasks"),
)
