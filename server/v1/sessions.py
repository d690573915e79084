"""`/v1/sessions/*`: browser sessions — answered with 501 until they are available."""

from __future__ import annotations

from typing import Any

from server.v1.envelope import Call, NotImplementedYet, props, v1_route


async def unavailable(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    raise NotImplementedYet("browser sessions are not available on this server yet")


async def telemetry(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    return {"success": True}


ENDPOINTS = (
    v1_route("sessions", "create", unavailable, "Create a browser session (501 for now)",
             request=props(timeout_seconds="integer", start_url="string", viewport="object",
                           headless="boolean"), statuses=(400, 501)),
    v1_route("sessions", "get", unavailable, "A browser session (501 for now)",
             statuses=(400, 501)),
    v1_route("sessions", "close", unavailable, "Close a browser session (501 for now)",
             statuses=(400, 501)),
    v1_route("telemetry", "recordCliEvent", telemetry, "Accepted and ignored",
             statuses=(200, 400)),
)
