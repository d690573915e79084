"""The `/api` routes, one module per resource, and the few helpers they share.

Routes are thin: parse the request, call the engine, shape the response. Errors are
raised as `engine.errors` exceptions and answered by `server.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import HTTPConnection, Request

from engine.errors import Issue, NotFound, ValidationFailed
from server.errors import MalformedJSON, ORJSONResponse

if TYPE_CHECKING:
    from engine.runtime import Runtime

MAX_LIMIT = 1000


def runtime_of(conn: HTTPConnection) -> Runtime:
    """The engine runtime the app opened in its lifespan."""
    runtime: Runtime = conn.app.state.runtime
    return runtime


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}`; anything else is a 400."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"malformed JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationFailed("the request body must be a JSON object")
    return data


def field_of(body: dict[str, Any], name: str, kind: type, noun: str) -> Any:
    """`body[name]` if it is a `kind` (None when absent or null), else a 400 naming it."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValidationFailed(issues=[Issue(message=f"'{name}' must be {noun}", path=name)])
    return value


def query_int(request: Request, name: str, default: int, *, maximum: int = MAX_LIMIT) -> int:
    """A non-negative integer query parameter (capped at `maximum`)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValidationFailed(issues=[Issue(
            message=f"'{name}' must be a non-negative integer, got {raw!r}", path=name)])
    return min(value, maximum)


def query_time(request: Request, name: str) -> float | None:
    """An ISO 8601 query parameter as epoch seconds (UTC when it has no offset)."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        raise ValidationFailed(issues=[Issue(
            message=f"'{name}' must be an ISO 8601 time, got {raw!r}", path=name)]) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def listing(items: Sequence[Any], total: int) -> ORJSONResponse:
    """A JSON array with the total count in `X-Total-Count`."""
    return ORJSONResponse(list(items), headers={"X-Total-Count": str(total)})


def path_param(request: HTTPConnection, name: str) -> str:
    value = request.path_params.get(name)
    if not isinstance(value, str) or not value:
        raise NotFound()
    return value
