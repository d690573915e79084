"""The `/v1` wire format: `POST /v1/<noun>/<verb>` with `{"json": …}` envelopes.

`v1_route` turns a handler `(call, data) -> dict` into a documented `Endpoint` that
reads the request envelope (an empty body is `{"json": {}}`), resolves the caller's
tenant and answers `{"json": result}`. Every error under `/v1` — raised by a handler,
or answered by the auth, body-limit or routing layers as `{"error": …}` — leaves as the
error envelope `{"json": {"defined": false, "code", "status", "message", "data":
{"issues": [{"path": [...], "message"}]}}}` (`V1ErrorMiddleware`).

Tenancy: tenant = organization. A user belongs to the tenant named by its first
`tenant:<name>` group, else to the default tenant; with auth off every caller is in the
default tenant. `tenant_of` decides for a request, by `engine.cloudtenancy` (which the
access control of `/api` follows too).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.builds import LlmEndpoint
from engine.callbacks import CallbackPolicy
from engine.cloud import Cloud, CloudOptions
from engine.cloudtenancy import DEFAULT_TENANT, tenant_of_groups
from engine.errors import Issue, PartiturError, ValidationFailed
from server.auth import actor, principal_of
from server.errors import ORJSONResponse, status_of
from server.openapi import Endpoint

log = logging.getLogger("partitur.v1")

CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
         405: "METHOD_NOT_SUPPORTED", 409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE",
         429: "TOO_MANY_REQUESTS", 500: "INTERNAL_SERVER_ERROR",
         501: "NOT_IMPLEMENTED"}
PREFIX = "/v1/"

ERROR_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"json": {
    "type": "object", "required": ["defined", "code", "status", "message"],
    "properties": {"defined": {"type": "boolean"}, "code": {"type": "string"},
                   "status": {"type": "integer"}, "message": {"type": "string"},
                   "data": {"type": "object"}}}}}


class NotImplementedYet(PartiturError):
    """Not implemented on this server."""

    code = "not_implemented"


def issue_path(path: str) -> list[str | int]:
    """`a.b[0]` → `["a", "b", 0]`."""
    out: list[str | int] = []
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("[") and part.endswith("]") and part[1:-1].isdigit():
            out.append(int(part[1:-1]))
        else:
            out.append(part)
    return out


def error_body(status: int, message: str, issues: list[Issue] | None = None,
               raw_issues: list[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {}
    listed = [{"path": issue_path(i.path), "message": i.message,
               **({"file": i.file, "line": i.line} if i.file else {})}
              for i in issues or []]
    listed += [{"path": issue_path(str(i.get("path") or "")), "message": i.get("message")}
               for i in raw_issues or []]
    if listed:
        data["issues"] = listed
    return {"json": {"defined": False, "code": CODES.get(status, "ERROR"), "status": status,
                     "message": message, "data": data}}


def error_envelope(exc: Exception) -> ORJSONResponse:
    if isinstance(exc, NotImplementedYet):
        return ORJSONResponse(error_body(501, exc.message), status_code=501)
    if isinstance(exc, PartiturError):
        status = status_of(exc)
        if status == 500:
            log.error("unmapped engine error under /v1", exc_info=exc)
            return ORJSONResponse(error_body(500, "internal server error"), status_code=500)
        issues = exc.issues if isinstance(exc, ValidationFailed) else None
        return ORJSONResponse(error_body(status, exc.message, issues), status_code=status)
    log.error("unhandled error under /v1", exc_info=exc)
    return ORJSONResponse(error_body(500, "internal server error"), status_code=500)


def tenant_of(request: Request) -> str:
    """The caller's tenant (the default one when auth is off or no group names one)."""
    principal = principal_of(request)
    if principal is None:
        return DEFAULT_TENANT
    return tenant_of_groups(principal.user.groups)


@dataclass(frozen=True, slots=True)
class Call:
    """One `/v1` call: who, in which tenant, over which engine."""

    request: Request
    tenant: str
    cloud: Cloud
    by: str | None


V1Handler = Callable[[Call, dict[str, Any]], Awaitable[dict[str, Any]]]


async def read_envelope(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body.strip():
        return {}
    try:
        outer = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"malformed JSON body: {exc}") from None
    if not isinstance(outer, dict):
        raise ValidationFailed('the body must be {"json": {...}}')
    inner = outer.get("json", {})
    if inner is None:
        return {}
    if not isinstance(inner, dict):
        raise ValidationFailed(issues=[Issue(message="'json' must be an object", path="")])
    return inner


def v1_route(noun: str, verb: str, handler: V1Handler, summary: str, *,
             request: Mapping[str, Any] | None = None, response: Mapping[str, Any] | None = None,
             statuses: tuple[int, ...] = (200, 400)) -> Endpoint:
    """The endpoint `POST /v1/<noun>/<verb>` running `handler` inside the envelopes.

    `statuses` are those any request can reach (a malformed body is always a 400); the
    404, 409 and 501 answers that depend on stored objects are described, like the error
    envelope itself, in docs/cloud-api.md.
    """

    async def endpoint(req: Request) -> Response:
        try:
            data = await read_envelope(req)
            call = Call(req, tenant_of(req), req.app.state.cloud, actor(req))
            result = await handler(call, data)
        except Exception as exc:
            return error_envelope(exc)
        return ORJSONResponse({"json": result})

    body = {"type": "object", "properties": {"json": dict(request or {"type": "object"})}}
    answer = {"type": "object", "properties": {"json": dict(response or {"type": "object"})}}
    return Endpoint("POST", f"/v1/{noun}/{verb}", endpoint, summary, statuses, body=body,
                    response=answer, tag=f"v1 {noun}")


# --- field readers ---------------------------------------------------------------------


def _bad(name: str, noun: str) -> ValidationFailed:
    return ValidationFailed(issues=[Issue(message=f"'{name}' must be {noun}", path=name)])


def required_str(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ValidationFailed(issues=[Issue(message=f"'{name}' is required (a string)",
                                             path=name)])
    return value


def opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad(name, "a string")
    return value


def opt_bool(data: Mapping[str, Any], name: str, default: bool | None = None) -> bool | None:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(name, "a boolean")
    return value


def opt_int(data: Mapping[str, Any], name: str, default: int | None, *, low: int = 0,
            high: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _bad(name, f"an integer {bounds}")
    return value


def opt_obj(data: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = data.get(name)
    if value is not None and not isinstance(value, dict):
        raise _bad(name, "an object")
    return value


def props(**fields: str | list[str] | Mapping[str, Any]) -> dict[str, Any]:
    """A JSON Schema object of `name=type` (a type name, or a schema)."""
    return {"type": "object", "properties": {
        k: ({"type": v} if isinstance(v, str | list) else dict(v)) for k, v in fields.items()}}


# --- errors from the layers around the routes ------------------------------------------


TELEMETRY = "/v1/telemetry/recordCliEvent"


class V1ErrorMiddleware:
    """Rewrites `{"error": …}` answers under `/v1/` (401, 404, 405, 413, 500) into the
    error envelope, keeping the status and headers.

    `telemetry/recordCliEvent` records nothing; clients send it without a key, so a
    request that auth refuses answers 204 (no content) instead of 401.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] + "/").startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        telemetry = scope["path"] == TELEMETRY

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if telemetry and message["status"] == 401:
                    start = {**message, "status": 204}
                    return
                if message["status"] < 400:
                    start = None
                    await send(message)
                    return
                start = message
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            if start["status"] == 204:
                await send({**start, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            await self._rewrite(start, b"".join(chunks), send)

        try:
            await self.app(scope, receive, capture)
        except Exception as exc:
            log.error("unhandled error under /v1", exc_info=exc)
            response = ORJSONResponse(error_body(500, "internal server error"), status_code=500)
            await response(scope, receive, send)

    @staticmethod
    async def _rewrite(start: Message, body: bytes, send: Send) -> None:
        status = int(start["status"])
        try:
            parsed = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            parsed = {}
        if isinstance(parsed, dict) and isinstance(parsed.get("json"), dict):
            new = body  # already an envelope
        else:
            message = parsed.get("error") if isinstance(parsed, dict) else None
            issues = parsed.get("issues") if isinstance(parsed, dict) else None
            new = orjson.dumps(error_body(status, str(message or CODES.get(status, "error")),
                                          raw_issues=issues if isinstance(issues, list)
                                          else None))
        headers = [(k, v) for k, v in start.get("headers", [])
                   if k.lower() not in (b"content-length", b"content-type")]
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(new)).encode())]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": new})


def cloud_options(settings: Any) -> CloudOptions:
    """The cloud layer's options from the server settings."""
    cb = getattr(settings, "callbacks", None)
    policy = CallbackPolicy(
        allow_private=bool(getattr(cb, "allow_private", False)),
        retry_for=float(getattr(cb, "retry_for", 3600.0)),
        max_attempts=int(getattr(cb, "max_attempts", 12)),
        timeout=float(getattr(cb, "timeout", 10.0)))
    debug = getattr(settings, "debug", None)
    llm = getattr(debug, "llm", None)
    return CloudOptions(secrets_key=getattr(settings, "secrets_key", None),
                        upload_limit=int(settings.limits.upload), callbacks=policy,
                        repair_task=getattr(debug, "repair_task", None),
                        llm=LlmEndpoint(llm.endpoint, llm.model, llm.api_key)
                        if llm is not None else None)
