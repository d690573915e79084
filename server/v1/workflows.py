"""`/v1/workflows/*`: the tenant's workflows (tasks of its ready deployments) and builds
from recorded action logs (`build`, `buildStatus`: engine.builds)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine import builds
from engine.actionlog import compile_action_log
from engine.builds import BuildRequest
from engine.compiler.validate import LoadedWorkspace
from engine.deployments import BUILDING, READY
from engine.errors import Issue, ValidationFailed
from engine.model import InputField
from engine.views import iso
from server.v1.envelope import Call, opt_obj, opt_str, props, required_str, v1_route

_TYPES = {"string": {"type": "string"}, "text": {"type": "string"},
          "integer": {"type": "integer"}, "number": {"type": "number"},
          "boolean": {"type": "boolean"}, "date": {"type": "string", "format": "date"},
          "datetime": {"type": "string", "format": "date-time"},
          "object": {"type": "object"}, "array": {"type": "array"}}


_BOUNDS = {"integer": ("minimum", "maximum"), "number": ("minimum", "maximum"),
           "string": ("minLength", "maxLength"), "array": ("minItems", "maxItems")}


def field_schema(spec: InputField) -> dict[str, Any]:
    one: dict[str, Any] = dict(_TYPES.get(spec.type, {
        "type": ["string", "object"], "description": f"a '{spec.type}' connection name"}))
    if spec.options is not None:
        one["enum"] = list(spec.options)
    if spec.pattern is not None:
        one["pattern"] = spec.pattern
    kind = one.get("type")
    keys = _BOUNDS.get(kind) if isinstance(kind, str) else None
    if keys is not None:  # the engine bounds a number, a string's length, a list's size
        for key, value in zip(keys, (spec.min, spec.max), strict=True):
            if value is not None:
                one[key] = value if kind in ("integer", "number") else int(value)
    out: dict[str, Any] = {"type": "array", "items": one} if spec.multiple else one
    if spec.description:
        out["description"] = spec.description
    if spec.default is not None:
        out["default"] = spec.default
    if spec.secret:
        out["writeOnly"] = True
    return out


def input_schema(fields: Mapping[str, InputField]) -> dict[str, Any]:
    """A task's input schema as JSON Schema (draft 2020-12)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "properties": {name: field_schema(f) for name, f in fields.items()},
            "required": [name for name, f in fields.items() if f.required and f.default is None],
            "additionalProperties": False}


def output_schema(loaded: LoadedWorkspace, workflow: str) -> dict[str, Any]:
    """The job output: an object of the leaf steps' outputs (with their action's schema)."""
    task = loaded.spec.tasks[workflow]
    needed = {d for s in task.flow.values() for d in s.depends_on}
    leaves = [n for n in task.flow if n not in needed]
    properties: dict[str, Any] = {}
    for name in leaves:
        step = task.flow[name]
        action = step.inline or (loaded.spec.actions.get(step.action) if step.action else None)
        schema = getattr(action, "output", None) if action is not None else None
        properties[name] = input_schema(schema) if isinstance(schema, dict) and schema else {}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "properties": properties}


async def list_workflows(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    deployments = call.cloud.deployments
    deps = await deployments.list_for(call.tenant)
    names = sorted({w for d in deps if d.data.get("status") == READY
                    for w in d.data.get("workflows", ())})
    deployed = []
    for name in names:
        try:
            dep = await deployments.resolve(call.tenant, name)
        except Exception:
            continue  # deleted
        first = min((d.created_at for d in deps if name in d.data.get("workflows", ())),
                    default=dep.created_at)
        pin = await deployments.pin_of(call.tenant, name)
        deployed.append({"name": name, "deployment_id": dep.id,
                         "deployment_status": dep.data["status"], "created_at": iso(first),
                         "updated_at": iso(dep.updated_at), "pinned": pin is not None})
    building = [{"build_id": d.id, "status": "deploying", "workflow_name": None,
                 "summary": d.data.get("description"), "error": None,
                 "created_at": iso(d.created_at), "updated_at": iso(d.updated_at)}
                for d in deps if d.data.get("status") == BUILDING]
    building += [{"build_id": b.id, "status": b.data["status"],
                  "workflow_name": b.data.get("workflow_name"),
                  "summary": b.data.get("summary"), "error": b.data.get("error"),
                  "created_at": iso(b.created_at), "updated_at": iso(b.updated_at)}
                 for b in await call.cloud.builds.in_progress(call.tenant)]
    return {"deployed_workflows": deployed, "in_progress_builds": building}


async def get(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    name = required_str(data, "workflow")
    deployments = call.cloud.deployments
    dep = await deployments.resolve(call.tenant, name)
    loaded = await deployments.load(dep)
    task = loaded.spec.tasks[name]
    candidates = await deployments.candidates(call.tenant, name)
    first = min((d.created_at for d in candidates), default=dep.created_at)
    pin = await deployments.pin_of(call.tenant, name)
    return {"workflow": name, "deployment_id": dep.id,
            "deployment_status": dep.data["status"],
            "deployment_created_at": iso(dep.created_at),
            "deployment_built_at": iso(dep.data.get("built_at")), "created_at": iso(first),
            "updated_at": iso(dep.updated_at), "description": task.description,
            "input_schema": input_schema(task.input),
            "output_schema": output_schema(loaded, name),
            "pinned_deployment_id": pin.data["deployment_id"] if pin is not None else None}


async def delete(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    name = required_str(data, "workflow")
    if await call.cloud.deployments.delete_workflow(call.tenant, name):
        return {"success": True, "message": f"workflow {name!r} deleted"}
    return {"success": False, "message": f"workflow {name!r} not found"}


async def build(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    descriptions = data.get("descriptions")
    if isinstance(descriptions, str):
        descriptions = [descriptions]
    if not isinstance(descriptions, list) or not descriptions or not all(
            isinstance(d, str) and d for d in descriptions):
        raise ValidationFailed(issues=[Issue(
            message="'descriptions' is required (one or more strings)", path="descriptions")])
    action_log = data.get("action_log")
    if action_log is not None and not isinstance(action_log, str | list):
        raise ValidationFailed(issues=[Issue(
            message="'action_log' must be JSONL text or a list of actions", path="action_log")])
    req = BuildRequest(descriptions=tuple(descriptions),
                       initial_url=opt_str(data, "initial_url"),
                       params=opt_obj(data, "params") or {}, action_log=action_log or None,
                       network_log=data.get("network_log"),
                       name=opt_str(data, "workflow_name"))
    if req.action_log is not None:
        # A log that does not compile is the caller's mistake: answer 400 now.
        compile_action_log(req.action_log, initial_url=req.initial_url, params=req.params)
    started = await call.cloud.builds.start(call.tenant, req)
    return {"build_id": started.id, "status": started.data["status"]}


async def build_status(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    return builds.view(await call.cloud.builds.get(call.tenant, required_str(data,
                                                                              "build_id")))


ENDPOINTS = (
    v1_route("workflows", "list", list_workflows, "Deployed workflows and builds in progress",
             response=props(deployed_workflows="array", in_progress_builds="array")),
    v1_route("workflows", "get", get, "The deployment behind a workflow, and its schemas",
             request=props(workflow="string"), response=props(
                 workflow="string", deployment_id="string", deployment_status="string",
                 deployment_created_at="string", deployment_built_at=["string", "null"],
                 created_at="string", updated_at="string", input_schema="object",
                 output_schema="object")),
    v1_route("workflows", "delete", delete, "Remove a workflow name from the tenant",
             request=props(workflow="string"), response=props(success="boolean",
                                                              message="string")),
    v1_route("workflows", "build", build,
             "Build a workflow from a recorded action log: compile, replay, deploy",
             request=props(descriptions={"type": "array", "items": {"type": "string"}},
                           initial_url="string", params="object",
                           action_log=["string", "array"], network_log=["string", "array"],
                           workflow_name="string"),
             response=props(build_id="string", status="string"), statuses=(200, 400)),
    v1_route("workflows", "buildStatus", build_status, "A workflow build's status",
             request=props(build_id="string"), response=props(
                 build_id="string", status="string", deployment_id=["string", "null"],
                 workflow_name=["string", "null"], summary=["string", "null"],
                 error=["string", "null"], details="object", attempted_steps="array",
                 created_at="string", updated_at="string"), statuses=(200, 400)),
)
