"""`/v1/credentials/*`: encrypted tenant credentials (values never listed)."""

from __future__ import annotations

from typing import Any

from engine.credentials import metadata
from engine.errors import Conflict, Issue, ValidationFailed
from server.v1.envelope import Call, opt_str, props, required_str, v1_route


def _value(data: dict[str, Any]) -> str:
    value = data.get("value")
    if not isinstance(value, str):
        raise ValidationFailed(issues=[Issue(message="'value' is required (a string)",
                                             path="value")])
    return value


async def create(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    obj = await call.cloud.credentials.create(call.tenant, required_str(data, "name"),
                                              _value(data), opt_str(data, "description"))
    return {"success": True, "credential": metadata(obj)}


async def list_credentials(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    found = await call.cloud.credentials.list_for(call.tenant)
    return {"credentials": [metadata(o) for o in found]}


async def get(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    creds = call.cloud.credentials
    name = opt_str(data, "name")
    obj = await creds.find(call.tenant, name=name, cred_id=None if name else
                           required_str(data, "id"))
    return {**metadata(obj), "value": creds.value(obj)}


async def update(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    obj = await call.cloud.credentials.update(
        call.tenant, required_str(data, "id"), name=opt_str(data, "name"),
        value=opt_str(data, "value"), description=opt_str(data, "description"))
    return {"success": True, "credential": metadata(obj)}


async def upsert(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    obj, overwritten = await call.cloud.credentials.upsert(
        call.tenant, required_str(data, "name"), _value(data),
        opt_str(data, "description"))
    return {"success": True, "overwritten": overwritten, "credential": metadata(obj)}


async def delete(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    creds = call.cloud.credentials
    name = opt_str(data, "name")
    obj = await creds.find(call.tenant, name=name, cred_id=None if name else
                           required_str(data, "id"))
    using = await call.cloud.jobs.active_using(call.tenant, obj.name or "")
    if using:
        raise Conflict(f"credential {obj.name!r} is used by queued or running jobs: "
                       f"{', '.join(using[:5])}")
    await creds.delete(obj)
    return {"success": True, "id": obj.id}


_META = props(id="string", name="string", description=["string", "null"],
              created_at="string", updated_at="string")

ENDPOINTS = (
    v1_route("credentials", "create", create, "Store a credential (encrypted)",
             request=props(name="string", value="string", description="string"),
             response=props(success="boolean", credential=_META), statuses=(200, 400)),
    v1_route("credentials", "list", list_credentials, "Credential metadata (never values)",
             response=props(credentials={"type": "array", "items": _META})),
    v1_route("credentials", "get", get, "One credential by name (or id), with its value",
             request=props(name="string", id="string"),
             response={**_META, "properties": {**_META["properties"],
                                                "value": {"type": "string"}}}),
    v1_route("credentials", "update", update, "Change a credential by id",
             request=props(id="string", name="string", value="string", description="string"),
             response=props(success="boolean", credential=_META), statuses=(200, 400)),
    v1_route("credentials", "upsert", upsert, "Create or overwrite a credential by name",
             request=props(name="string", value="string", description="string"),
             response=props(success="boolean", overwritten="boolean", credential=_META)),
    v1_route("credentials", "delete", delete,
             "Delete a credential (refused while a queued or running job uses it)",
             request=props(id="string", name="string"),
             response=props(success="boolean", id="string"), statuses=(200, 400)),
)
