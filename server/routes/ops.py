"""Operations: `/healthz`, `/readyz`, `/metrics` and `/openapi.json`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from server.errors import ORJSONResponse
from server.metrics import CONTENT_TYPE
from server.openapi import Endpoint
from server.routes import runtime_of


async def healthz(request: Request) -> Response:
    return ORJSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    runtime = runtime_of(request)
    checks: dict[str, Any] = {}
    try:
        await runtime.store.last_seq()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"unreachable: {type(exc).__name__}"
    broken = [ws.name for ws in runtime.workspaces.all() if ws.current is None]
    checks["workspaces"] = "ok" if not broken else f"not loaded: {', '.join(broken)}"
    if all(v == "ok" for v in checks.values()):
        return ORJSONResponse({"status": "ready", "checks": checks})
    return ORJSONResponse({"error": "not ready", "checks": checks}, status_code=503)


async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    return ORJSONResponse(request.app.state.openapi())


_STATUS = {"type": "object", "properties": {"status": {"type": "string"}}}

ENDPOINTS = (
    Endpoint("GET", "/healthz", healthz, "The process is up", response=_STATUS, tag="ops"),
    Endpoint("GET", "/readyz", readyz, "The store is reachable and workspaces loaded",
             (200, 503), response=_STATUS, tag="ops"),
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics", response={"type": "string"},
             tag="ops", content_type="text/plain"),
    Endpoint("GET", "/openapi.json", openapi, "This document", response={"type": "object"},
             tag="ops"),
)
