"""The route table's description: `Endpoint` records and the `/openapi.json` builder.

Each routes module lists its `Endpoint`s (method, path, handler, documented statuses,
query parameters, body and response schemas); `server.app` builds Starlette routes from
the same list, so a route cannot exist undocumented.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Awaitable[Response]]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "issues": {"type": "array", "items": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
        }},
    },
}

_DESCRIPTIONS = {
    200: "OK", 101: "Switching protocols", 400: "Bad request (invalid input, malformed JSON)",
    401: "Unauthorized", 404: "Not found", 405: "Method not allowed",
    409: "Conflict with the current state", 413: "Request body too large",
    500: "Internal server error", 503: "Not ready",
}


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter."""

    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One documented route (for a WebSocket route, `method` is `"WEBSOCKET"`)."""

    method: str
    path: str
    handler: Any
    summary: str
    statuses: tuple[int, ...] = (200,)
    query: tuple[Param, ...] = ()
    body: Mapping[str, Any] | None = None
    response: Mapping[str, Any] | None = None
    headers: tuple[str, ...] = ()
    tag: str = "api"
    content_type: str = "application/json"


_PATH_PARAM = re.compile(r"{([A-Za-z_]+)(?::[a-z]+)?}")


def openapi_path(path: str) -> str:
    """`/api/jobs/{id}/artifacts/{name:path}` → `/api/jobs/{id}/artifacts/{name}`."""
    return _PATH_PARAM.sub(r"{\1}", path)


def _operation(ep: Endpoint) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(ep.path)
    ]
    params += [
        {"name": p.name, "in": "query", "required": p.required, "description": p.description,
         "schema": dict(p.schema)}
        for p in ep.query
    ]
    params += [
        {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
        for h in ep.headers
    ]
    responses: dict[str, Any] = {}
    statuses = set(ep.statuses)
    if ep.method == "POST":
        statuses.add(413)  # the body limit applies to every request with a body
    for status in sorted(statuses):
        entry: dict[str, Any] = {"description": _DESCRIPTIONS.get(status, "")}
        if 200 <= status < 300:
            schema = dict(ep.response) if ep.response else {}
            entry["content"] = {ep.content_type: {"schema": schema}}
            if schema.get("type") == "array":
                entry["headers"] = {"X-Total-Count": {"schema": {"type": "integer"}}}
        elif status >= 400:
            entry["content"] = {"application/json": {"schema": ERROR_SCHEMA}}
        responses[str(status)] = entry
    op: dict[str, Any] = {
        "summary": ep.summary, "tags": [ep.tag], "parameters": params, "responses": responses,
        "operationId": f"{ep.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', ep.path.lower())}"
                       .rstrip("_"),
    }
    if ep.body is not None:
        op["requestBody"] = {"required": False,
                             "content": {"application/json": {"schema": dict(ep.body)}}}
    return op


def build_openapi(endpoints: Iterable[Endpoint], *, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `endpoints` (WebSocket routes as `x-websocket` GETs)."""
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        item = paths.setdefault(openapi_path(ep.path), {})
        if ep.method == "WEBSOCKET":
            op = _operation(ep)
            op["x-websocket"] = True
            item["get"] = op
        else:
            item[ep.method.lower()] = _operation(ep)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Partitur workspace API", "version": version},
        "paths": paths,
    }
