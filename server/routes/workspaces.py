"""`/api/workspaces`: the configured workspaces, their triggers, and reloading one."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.auth.acl import Level
from engine.cron import next_runs_iso
from engine.errors import NotFound, PartiturError
from engine.model import TriggerSpec
from engine.workspaces import Workspace
from server.auth import task_level, workspace_visible
from server.errors import ORJSONResponse
from server.openapi import Endpoint
from server.routes import listing, path_param, runtime_of

MASK = "••••••"
GIT_UNSUPPORTED = "git workspaces are not supported yet"


def workspace_view(ws: Workspace) -> dict[str, Any]:
    """An entry of `GET /api/workspaces`."""
    spec = ws.current.spec if ws.current is not None else None
    return {
        "name": ws.name,
        "tasks_count": len(spec.tasks) if spec else 0,
        "actions_count": len(spec.actions) if spec else 0,
        "triggers_count": len(spec.triggers) if spec else 0,
        "revision": ws.current.revision if ws.current is not None else None,
        "load_error": ws.load_error_text(),
    }


def _git_view(name: str) -> dict[str, Any]:
    return {"name": name, "tasks_count": 0, "actions_count": 0, "triggers_count": 0,
            "revision": None, "load_error": GIT_UNSUPPORTED}


def trigger_view(name: str, trigger: TriggerSpec) -> dict[str, Any]:
    """A trigger as the reference lists it; scheduler triggers get their next 5 runs."""
    # Only what the trigger sets: a scheduler does not list webhook defaults.
    data = trigger.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    view: dict[str, Any] = {"name": name, "type": trigger.type}
    if trigger.cron is not None:
        view["cron"] = trigger.cron
    view.update({"task": trigger.task, "enabled": trigger.enabled,
                 "input": dict(trigger.input)})
    if trigger.type == "scheduler":
        view["timezone"] = trigger.timezone
    for key, value in data.items():
        view.setdefault(key, value)
    if trigger.secret is not None:
        view["secret"] = MASK
    if trigger.type == "scheduler":
        runs: list[str] = []
        if trigger.enabled and trigger.cron:
            try:
                runs = next_runs_iso(trigger.cron, trigger.timezone)
            except PartiturError:
                runs = []
        view["next_runs"] = runs
    return view


def get_workspace(request: Request) -> Workspace:
    """The workspace named by the `ws` path parameter (404 when unknown, or another
    tenant's)."""
    name = path_param(request, "ws")
    if not workspace_visible(request, name):
        raise NotFound(f"workspace {name!r} not found")
    if name in request.app.state.git_workspaces:
        raise NotFound(f"workspace {name!r}: {GIT_UNSUPPORTED}")
    return runtime_of(request).workspaces.get(name)


async def list_workspaces(request: Request) -> Response:
    runtime = runtime_of(request)
    items = [{**workspace_view(ws), **(await runtime.orchestrator.ops.state(ws.name)).view()}
             for ws in runtime.workspaces.all() if workspace_visible(request, ws.name)]
    items += [_git_view(name) for name in request.app.state.git_workspaces
              if workspace_visible(request, name)]
    return listing(items, len(items))


async def list_triggers(request: Request) -> Response:
    ws = get_workspace(request)
    loaded = ws.require()
    items = [trigger_view(name, t) for name, t in loaded.spec.triggers.items()
             if task_level(request, ws.name, t.task) >= Level.VIEW]
    return listing(items, len(items))


async def refresh_workspace(request: Request) -> Response:
    ws = get_workspace(request)
    ws = await runtime_of(request).workspaces.refresh(ws.name)
    return ORJSONResponse(workspace_view(ws))


_WORKSPACE = {"type": "object", "properties": {
    "name": {"type": "string"}, "tasks_count": {"type": "integer"},
    "actions_count": {"type": "integer"}, "triggers_count": {"type": "integer"},
    "revision": {"type": ["string", "null"]}, "load_error": {"type": ["string", "null"]},
}}
TRIGGER_SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "type": {"type": "string"}, "cron": {"type": "string"},
    "task": {"type": "string"}, "enabled": {"type": "boolean"}, "input": {"type": "object"},
    "next_runs": {"type": "array", "items": {"type": "string", "format": "date-time"}},
}}

ENDPOINTS = (
    Endpoint("GET", "/api/workspaces", list_workspaces, "List workspaces",
             response={"type": "array", "items": _WORKSPACE}, tag="workspaces"),
    Endpoint("GET", "/api/workspaces/{ws}/triggers", list_triggers, "List a workspace's triggers",
             (200, 404, 409), response={"type": "array", "items": TRIGGER_SCHEMA},
             tag="workspaces"),
    Endpoint("POST", "/api/workspaces/{ws}/refresh", refresh_workspace,
             "Reload a workspace from its source", (200, 404), response=_WORKSPACE,
             tag="workspaces"),
)
