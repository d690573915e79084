"""`/v1/webhooks/*`: tenant webhook endpoints, their deliveries and redelivery."""

from __future__ import annotations

from typing import Any

from engine.callbacks import DELIVERY, WEBHOOK, check_url, delivery_view, new_signing_secret
from engine.clock import new_job_id
from engine.errors import NotFound
from engine.store.cloud import CloudObject
from engine.views import iso
from server.v1.envelope import Call, opt_bool, opt_int, opt_str, props, required_str, v1_route


def view(obj: CloudObject) -> dict[str, Any]:
    return {"id": obj.id, "url": obj.data["url"], "description": obj.data.get("description"),
            "active": obj.data.get("active", True), "created_at": iso(obj.created_at),
            "updated_at": iso(obj.updated_at)}


async def _endpoint(call: Call, webhook_id: str) -> CloudObject:
    obj = await call.cloud.repo.get(WEBHOOK, webhook_id)
    if obj is None or obj.tenant != call.tenant:
        raise NotFound(f"webhook {webhook_id!r} not found")
    return obj


async def create(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    url = check_url(data.get("url"))
    secret = opt_str(data, "signing_secret") or new_signing_secret()
    now = call.cloud.jobs.clock.now()
    obj = CloudObject(WEBHOOK, new_job_id(), call.tenant, now, now, {
        "url": url, "secret": call.cloud.cipher.encrypt(secret),
        "description": opt_str(data, "description"),
        "active": opt_bool(data, "active", True)})
    await call.cloud.repo.insert(obj)
    return {"success": True, "webhook": view(obj), "signing_secret": secret}


async def list_webhooks(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    return {"webhooks": [view(o) for o in await call.cloud.repo.all(WEBHOOK, call.tenant)]}


async def update(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    obj = await _endpoint(call, required_str(data, "id"))
    fields: dict[str, Any] = {}
    if data.get("url") is not None:
        fields["url"] = check_url(data["url"])
    if "description" in data:
        fields["description"] = opt_str(data, "description")
    if data.get("active") is not None:
        fields["active"] = opt_bool(data, "active")
    if data.get("signing_secret") is not None:
        fields["secret"] = call.cloud.cipher.encrypt(required_str(data, "signing_secret"))
    updated = await call.cloud.repo.merge(obj, call.cloud.jobs.clock.now(), **fields)
    return {"success": True, "webhook": view(updated)}


async def delete(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    obj = await _endpoint(call, required_str(data, "id"))
    await call.cloud.repo.delete(WEBHOOK, obj.id)
    return {"success": True, "id": obj.id}


async def deliveries(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    webhook_id = opt_str(data, "webhook_id") or opt_str(data, "id")
    job_id = opt_str(data, "job_id")
    limit = opt_int(data, "limit", 50, low=1, high=500) or 50
    where = {k: v for k, v in (("webhook_id", webhook_id), ("job_id", job_id)) if v}
    found = await call.cloud.repo.page(DELIVERY, call.tenant, limit=limit, where=where)
    return {"deliveries": [delivery_view(d) for d in found]}


async def redeliver(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    delivery = await call.cloud.callbacks.redeliver(call.tenant, required_str(data, "id"))
    return {"success": delivery.data["status"] == "delivered",
            "delivery": delivery_view(delivery)}


_HOOK = props(id="string", url="string", description=["string", "null"], active="boolean",
              created_at="string", updated_at="string")

ENDPOINTS = (
    v1_route("webhooks", "create", create, "Add a webhook endpoint (the secret is shown once)",
             request=props(url="string", signing_secret="string", description="string",
                           active="boolean"),
             response=props(success="boolean", webhook=_HOOK, signing_secret="string")),
    v1_route("webhooks", "list", list_webhooks, "The tenant's webhook endpoints",
             response=props(webhooks={"type": "array", "items": _HOOK})),
    v1_route("webhooks", "update", update, "Change a webhook endpoint",
             request=props(id="string", url="string", description="string", active="boolean",
                           signing_secret="string"),
             response=props(success="boolean", webhook=_HOOK)),
    v1_route("webhooks", "delete", delete, "Remove a webhook endpoint",
             request=props(id="string"), response=props(success="boolean", id="string")),
    v1_route("webhooks", "deliveries", deliveries,
             "The delivery log (every attempt) of callbacks and webhooks",
             request=props(webhook_id="string", job_id="string", limit="integer"),
             response=props(deliveries="array")),
    v1_route("webhooks", "redeliver", redeliver, "Send a delivery again (same webhook-id)",
             request=props(id="string"), response=props(success="boolean", delivery="object")),
)
