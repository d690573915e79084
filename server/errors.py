"""Every error the HTTP layer answers, as `{"error": "…"}` JSON (one exception-handler map).

Routes raise `engine.errors` exceptions (or let the engine raise them); this module maps
them onto status codes. Validation errors add `"issues": [{path, message, …}]` naming every
bad field. Nothing here ever answers HTML or a traceback: an unexpected exception is
logged and answered as a bare 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send

from engine.auth.service import RateLimited
from engine.errors import (
    Conflict,
    Forbidden,
    LimitExceeded,
    NotFound,
    PartiturError,
    Unauthorized,
    ValidationFailed,
    WorkspaceInvalid,
)

log = logging.getLogger("partitur.server")


class ORJSONResponse(Response):
    """A JSON response encoded with orjson (DESIGN §8)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class BodyTooLarge(LimitExceeded):
    """The request body is larger than the limit."""

    code = "body_too_large"


class MalformedJSON(ValidationFailed):
    """The request body is not valid JSON."""

    code = "malformed_json"


class MethodNotAllowed(PartiturError):
    """Method not allowed."""

    code = "method_not_allowed"


# Most specific first: the first matching class decides the status.
STATUS_BY_ERROR: tuple[tuple[type[PartiturError], int], ...] = (
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (MethodNotAllowed, 405),
    (WorkspaceInvalid, 409),
    (ValidationFailed, 400),
    (Conflict, 409),
    (RateLimited, 429),
    (LimitExceeded, 413),
)


def status_of(exc: PartiturError) -> int:
    """The HTTP status of an engine error (500 for anything unmapped)."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(status: int, message: str, *, issues: list[dict[str, Any]] | None = None,
                   headers: Mapping[str, str] | None = None) -> ORJSONResponse:
    """`{"error": message}` (plus `issues`) with `status`."""
    body: dict[str, Any] = {"error": message}
    if issues:
        body["issues"] = issues
    return ORJSONResponse(body, status_code=status, headers=headers)


async def partitur_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PartiturError)
    status = status_of(exc)
    issues = [i.to_dict() for i in exc.issues] if isinstance(exc, ValidationFailed) else None
    if status == 500:
        log.error("unmapped engine error on %s %s", request.method, request.url.path,
                  exc_info=exc)
        return error_response(500, "internal server error")
    return error_response(status, exc.message, issues=issues)


_HTTP_MESSAGES = {404: "not found", 405: "method not allowed"}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = exc.detail if exc.detail and status not in _HTTP_MESSAGES else None
    return error_response(status, message or _HTTP_MESSAGES.get(status, "error"),
                          headers=exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error")


class InternalErrorMiddleware:
    """Answers an unexpected exception as a JSON 500 and keeps the connection open.

    Starlette's outermost handler (`unexpected_error`) would answer it too, but then
    re-raises, and the server closes the connection: a client reusing it got a reset on
    its next request. Installed innermost, this catches the exception first; the outer
    handler stays for anything raised outside it. An exception after the response has
    started is re-raised (there is no clean answer left to give).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise
            log.error("unhandled error on %s %s", scope.get("method"), scope.get("path"),
                      exc_info=exc)
            await error_response(500, "internal server error")(scope, receive, send)


def exception_handlers() -> dict[Any, ExceptionHandler]:
    """The map `create_app` installs."""
    return {
        PartiturError: partitur_error,
        HTTPException: http_error,
        Exception: unexpected_error,
    }
