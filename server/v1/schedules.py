"""`/v1/schedules/*`: cron schedules of workflows, stored in the database."""

from __future__ import annotations

from typing import Any

from server.v1.envelope import Call, opt_bool, opt_int, opt_str, props, required_str, v1_route

_FIELDS = ("params", "cron_expr", "timezone", "timeout_seconds", "callback_url",
           "callback_secret", "skip_callbacks", "enabled", "disable_after_failures", "overlap")


def _fields(data: dict[str, Any]) -> dict[str, Any]:
    opt_str(data, "cron_expr")
    opt_str(data, "timezone")
    opt_str(data, "callback_url")
    opt_str(data, "callback_secret")
    opt_bool(data, "skip_callbacks")
    opt_bool(data, "enabled")
    opt_int(data, "timeout_seconds", None, low=1)
    opt_int(data, "disable_after_failures", None, low=1)
    return {k: data[k] for k in _FIELDS if k in data}


async def create(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    fields = {**_fields(data), "workflow": required_str(data, "workflow"),
              "cron_expr": required_str(data, "cron_expr")}
    if fields.get("callback_url"):
        from engine.callbacks import check_url

        check_url(fields["callback_url"], "callback_url")
    obj = await call.cloud.schedules.create(call.tenant, fields)
    return {"success": True, "schedule": call.cloud.schedules.view(obj)}


async def list_schedules(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    found = await call.cloud.schedules.list_for(
        call.tenant, enabled=opt_bool(data, "enabled"), workflow=opt_str(data, "workflow"),
        limit=opt_int(data, "limit", 50, low=1, high=200) or 50)
    return {"schedules": [call.cloud.schedules.view(s) for s in found]}


async def get(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    obj = await call.cloud.schedules.get(call.tenant, required_str(data, "id"))
    return {"schedule": call.cloud.schedules.view(obj)}


async def update(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    obj = await call.cloud.schedules.update(call.tenant, required_str(data, "id"),
                                            _fields(data))
    return {"schedule": call.cloud.schedules.view(obj)}


async def delete(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    schedule_id = required_str(data, "id")
    await call.cloud.schedules.delete(call.tenant, schedule_id)
    return {"success": True, "id": schedule_id}


SCHEDULE = props(
    id="string", workflow="string", params="object", cron_expr="string", timezone="string",
    timeout_seconds="integer", callback_url=["string", "null"], skip_callbacks="boolean",
    enabled="boolean", next_fire_at=["string", "null"], last_fire_at=["string", "null"],
    last_job_id=["string", "null"], last_error=["string", "null"],
    consecutive_failures="integer", created_at="string", updated_at="string")
_REQUEST = props(workflow="string", params="object", cron_expr="string", timezone="string",
                 timeout_seconds="integer", callback_url=["string", "null"],
                 callback_secret=["string", "null"], skip_callbacks="boolean",
                 enabled="boolean", disable_after_failures=["integer", "null"],
                 overlap="string")

ENDPOINTS = (
    v1_route("schedules", "create", create, "Create a cron schedule of a workflow",
             request=_REQUEST, response=props(success="boolean", schedule=SCHEDULE)),
    v1_route("schedules", "list", list_schedules, "The tenant's schedules",
             request=props(enabled="boolean", workflow="string", limit="integer"),
             response=props(schedules={"type": "array", "items": SCHEDULE})),
    v1_route("schedules", "get", get, "One schedule", request=props(id="string"),
             response=props(schedule=SCHEDULE)),
    v1_route("schedules", "update", update, "Change a schedule (null callback fields clear "
             "the callback)", request={**_REQUEST, "properties": {
                 **_REQUEST["properties"], "id": {"type": "string"}}},
             response=props(schedule=SCHEDULE)),
    v1_route("schedules", "delete", delete, "Delete a schedule", request=props(id="string"),
             response=props(success="boolean", id="string")),
)
