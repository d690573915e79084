"""`/v1/workflows/*`: the tenant's workflows (tasks of its ready deployments)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.compiler.validate import LoadedWorkspace
from engine.deployments import BUILDING, READY
from engine.model import InputField
from engine.views import iso
from server.v1.envelope import Call, NotImplementedYet, props, required_str, v1_route

_TYPES = {"string": {"type": "string"}, "text": {"type": "string"},
          "integer": {"type": "integer"}, "number": {"type": "number"},
          "boolean": {"type": "boolean"}, "date": {"type": "string", "format": "date"},
          "datetime": {"type": "string", "format": "date-time"},
          "object": {"type": "object"}, "array": {"type": "array"}}


def field_schema(spec: InputField) -> dict[str, Any]:
    one: dict[str, Any] = dict(_TYPES.get(spec.type, {
        "type": ["string", "object"], "description": f"a '{spec.type}' connection name"}))
    if spec.options is not None:
        one["enum"] = list(spec.options)
    if spec.pattern is not None:
        one["pattern"] = spec.pattern
    if spec.min is not None or spec.max is not None:
        numeric = one.get("type") in ("integer", "number")
        for bound, value in (("min", spec.min), ("max", spec.max)):
            if value is not None:
                key = ("minimum" if bound == "min" else "maximum") if numeric else (
                    "minLength" if bound == "min" else "maxLength")
                one[key] = value if numeric else int(value)
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
    return {"deployed_workflows": deployed, "in_progress_builds": building}


async def get(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    name = required_str(data, "workflow")
    deployments = call.cloud.deployments
    dep = await deployments.resolve(call.tenant, name)
    loaded = deployments.loaded(dep)
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
    raise NotImplementedYet("AI workflow builds are not available on Partitur; deploy a "
                            "workspace with deployments/create")


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
    v1_route("workflows", "build", build, "AI workflow builds (not available: 501)",
             statuses=(400, 501)),
    v1_route("workflows", "buildStatus", build, "AI workflow builds (not available: 501)",
             statuses=(400, 501)),
)
