"""`/v1/deployments/*`: upload (create), list, sync, and Partitur's pin and rollback."""

from __future__ import annotations

from typing import Any

from engine.store.cloud import CloudObject
from engine.views import iso
from server.v1.envelope import Call, opt_bool, opt_str, props, required_str, v1_route


def view(dep: CloudObject) -> dict[str, Any]:
    d = dep.data
    return {"id": dep.id, "description": d.get("description"), "status": d["status"],
            "source_path": d.get("source_path"), "bundle_path": d.get("bundle_path"),
            "build_error": d.get("build_error"), "entry_point": d.get("entry_point"),
            "built_at": iso(d.get("built_at")), "created_at": iso(dep.created_at),
            "workflows": list(d.get("workflows") or []), "revision": d.get("revision")}


async def create(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    dep = await call.cloud.deployments.create(
        call.tenant, required_str(data, "source"), description=opt_str(data, "description"),
        entry_point=opt_str(data, "entry_point"),
        auto_repair=bool(opt_bool(data, "auto_repair", False)))
    return {"deployment_id": dep.id, "status": "building", "created_at": iso(dep.created_at)}


async def list_deployments(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    return {"deployments": [view(d) for d in await call.cloud.deployments.list_for(call.tenant)]}


async def sync(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    return view(await call.cloud.deployments.get(call.tenant, required_str(data, "id")))


async def pin(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    workflow = required_str(data, "workflow")
    dep_id = opt_str(data, "deployment_id")
    await call.cloud.deployments.pin(call.tenant, workflow, dep_id)
    return {"success": True, "workflow": workflow, "pinned_deployment_id": dep_id}


async def rollback(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    workflow = required_str(data, "workflow")
    dep = await call.cloud.deployments.rollback(call.tenant, workflow,
                                                opt_str(data, "deployment_id"))
    return {"success": True, "workflow": workflow, "pinned_deployment_id": dep.id,
            "deployment": view(dep)}


_DEP = props(id="string", description=["string", "null"], status="string",
             source_path=["string", "null"], bundle_path=["string", "null"],
             build_error=["string", "null"], entry_point=["string", "null"],
             built_at=["string", "null"], created_at="string",
             workflows={"type": "array", "items": {"type": "string"}})

ENDPOINTS = (
    v1_route("deployments", "create", create, "Upload a base64 gzip tarball of a workspace",
             request=props(description="string", source="string", entry_point="string",
                           auto_repair="boolean"),
             response=props(deployment_id="string", status="string", created_at="string"),
             statuses=(200, 400, 413)),
    v1_route("deployments", "list", list_deployments, "The tenant's deployments, newest first",
             response=props(deployments={"type": "array", "items": _DEP})),
    v1_route("deployments", "sync", sync, "A deployment's build status and workflows",
             request=props(id="string"), response=_DEP),
    v1_route("deployments", "pin", pin,
             "Pin a workflow to a deployment (deployment_id null unpins)",
             request=props(workflow="string", deployment_id=["string", "null"]),
             response=props(success="boolean", workflow="string",
                            pinned_deployment_id=["string", "null"]),
             statuses=(200, 400)),
    v1_route("deployments", "rollback", rollback,
             "Pin a workflow to the ready deployment before its current one (or to one given)",
             request=props(workflow="string", deployment_id="string"),
             response=props(success="boolean", workflow="string",
                            pinned_deployment_id="string", deployment="object"),
             statuses=(200, 400)),
)
