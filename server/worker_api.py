"""`/worker/*`: the API remote workers use (DESIGN §6); see docs/deploy.md.

Every route needs the worker token (`workers.token`) as `Authorization: Bearer <token>`;
without it, or with a wrong one, 401 (and when no token is configured, every call is
401: remote workers are off). A call under a lease whose lease no longer holds is 409
and changes nothing. The routes are thin: they parse, call `engine.workqueue.WorkQueue`
and shape the answer. They are not part of the public OpenAPI document.

- `POST /worker/register` `{name, tags, concurrency, worker_id?}` → `{worker_id, …}`
- `POST /worker/heartbeat` `{worker_id}` → 200 (404 for an unknown worker: register again)
- `POST /worker/claim` `{worker_id, timeout, max?, start?}` → 200 with a step, or 204
  after `timeout`; with `max: N`, 200 `{steps: [...]}` with up to N steps (empty after
  `timeout`); with `start: true` each step's start is recorded with its claim
- `POST /worker/leases/{lease}/heartbeat` → `{cancel: bool}`
- `POST /worker/leases/{lease}/started` `{pid}`
- `POST /worker/leases/{lease}/logs` `{offset, lines: [{ts, stream, line}]}` → `{next}`
- `POST /worker/leases/{lease}/result` `{status, output, error, exit_code, kind, message,
  offset?, lines?, claim?}`: the step's last lines may come with it; with
  `claim: {max, start}` the answer also holds the worker's next `steps` (none waited for)
- `GET /worker/revisions/{workspace}/{revision}` → the workspace as `.tar.gz`, with an
  `ETag`; `If-None-Match` with that tag → 304.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import tarfile
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from engine.workqueue import WorkQueue
from server.errors import ORJSONResponse
from server.routes import path_param, read_json, runtime_of

MAX_CLAIM_WAIT = 60.0
MAX_CLAIM_BATCH = 64
# What this server accepts beyond the first protocol (announced by `register`):
# `claim-many`: `max` in a claim, answered `{steps: […]}`; `claim-start`: `start: true`
# in a claim records each step's start with its claim (no `started` call follows);
# `result-lines`: `offset` and `lines` in a result; `result-claim`: `claim: {max, start}`
# in a result claims the worker's next steps (without waiting), answered in `steps`.
FEATURES = ("claim-many", "claim-start", "result-lines", "result-claim")
_TARBALLS: dict[tuple[str, str, str], tuple[str, bytes]] = {}


def _authorize(request: Request) -> WorkQueue:
    settings = request.app.state.settings
    expected = getattr(settings.workers, "token", None)
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), str(expected).encode()):
        raise Unauthorized("a valid worker token is required (Authorization: Bearer …)")
    queue = runtime_of(request).queue
    if queue is None:
        raise Conflict("this server does not queue steps for remote workers")
    return queue


def _str(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationFailed(f"'{name}' must be a non-empty string")
    return value


async def register(request: Request) -> Response:
    queue = _authorize(request)
    body = await read_json(request)
    tags = body.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValidationFailed("'tags' must be a list of strings")
    concurrency = body.get("concurrency", 1)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ValidationFailed("'concurrency' must be a positive integer")
    row = await queue.register(_str(body, "name") or "", tags, concurrency,
                               _str(body, "worker_id", required=False))
    return ORJSONResponse({"worker_id": row.worker_id, "name": row.name, "tags": list(row.tags),
                           "lease_timeout": queue.lease_timeout,
                           "heartbeat_interval": max(0.2, queue.lease_timeout / 4),
                           "features": list(FEATURES)})


async def heartbeat(request: Request) -> Response:
    queue = _authorize(request)
    body = await read_json(request)
    await queue.worker_heartbeat(_str(body, "worker_id") or "")
    return ORJSONResponse({"ok": True})


async def claim(request: Request) -> Response:
    queue = _authorize(request)
    body = await read_json(request)
    timeout = body.get("timeout", 20.0)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
        raise ValidationFailed("'timeout' must be a number of seconds")
    many, start = _claim_options(body)
    worker_id = _str(body, "worker_id") or ""
    gone = asyncio.Event()
    watcher = asyncio.ensure_future(_watch_disconnect(request, gone))
    try:
        found = await queue.claim_many(worker_id, min(float(timeout), MAX_CLAIM_WAIT),
                                       min(many or 1, MAX_CLAIM_BATCH), gone, start=start)
    finally:
        watcher.cancel()
    await queue.touch_after_claim(worker_id)
    if many is not None:
        return ORJSONResponse({"steps": [a.to_json() for a in found]})
    if not found:
        return Response(status_code=204)
    return ORJSONResponse(found[0].to_json())


def _claim_options(body: dict[str, Any]) -> tuple[int | None, bool]:
    """`max` (None when absent) and `start` of a claim."""
    many = body.get("max")
    if many is not None and (not isinstance(many, int) or isinstance(many, bool)
                             or many < 1):
        raise ValidationFailed("'max' must be a positive integer")
    start = body.get("start", False)
    if not isinstance(start, bool):
        raise ValidationFailed("'start' must be a boolean")
    return many, start


async def _watch_disconnect(request: Request, gone: asyncio.Event) -> None:
    """Set `gone` when the client hangs up (the body was read: only that can come)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


async def lease_heartbeat(request: Request) -> Response:
    queue = _authorize(request)
    cancel = await queue.lease_heartbeat(path_param(request, "lease"))
    return ORJSONResponse({"cancel": cancel})


def _pid(value: Any) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValidationFailed("'pid' must be an integer")
    return value


def _lines(body: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    lines = body.get("lines") or []
    offset = body.get("offset", 0)
    if not isinstance(lines, list) or not all(isinstance(x, dict) for x in lines):
        raise ValidationFailed("'lines' must be a list of objects")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValidationFailed("'offset' must be a non-negative integer")
    return lines, offset


async def started(request: Request) -> Response:
    queue = _authorize(request)
    body = await read_json(request)
    await queue.started(path_param(request, "lease"), _pid(body.get("pid")))
    return ORJSONResponse({"ok": True})


async def logs(request: Request) -> Response:
    queue = _authorize(request)
    body = await read_json(request)
    lines, offset = _lines(body)
    end = await queue.logs(path_param(request, "lease"), offset, lines)
    return ORJSONResponse({"next": end})


async def result(request: Request) -> Response:
    queue = _authorize(request)
    body = await read_json(request)
    lines: list[dict[str, Any]] | None = None
    offset = 0
    if "lines" in body or "offset" in body:
        lines, offset = _lines(body)
    claim = body.get("claim")
    if claim is None:
        status = await queue.result(path_param(request, "lease"), body, lines=lines,
                                    offset=offset)
        return ORJSONResponse({"status": status})
    if not isinstance(claim, dict):
        raise ValidationFailed("'claim' must be an object {max, start}")
    many, start = _claim_options(claim)
    status, found = await queue.result_then_claim(
        path_param(request, "lease"), body, lines=lines, offset=offset,
        limit=min(many or 1, MAX_CLAIM_BATCH), start=start)
    return ORJSONResponse({"status": status, "steps": [a.to_json() for a in found]})


def _tarball(path: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for item in sorted(path.rglob("*")):
            rel = item.relative_to(path)
            if rel.parts[0] == ".git" or item.is_symlink():
                continue
            info = tar.gettarinfo(str(item), arcname=str(rel))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if item.is_file():
                with item.open("rb") as fh:
                    tar.addfile(info, fh)
            elif item.is_dir():
                tar.addfile(info)
    return buffer.getvalue()


async def revision(request: Request) -> Response:
    _authorize(request)
    workspace = path_param(request, "workspace")
    rev = path_param(request, "revision")
    cloud = getattr(request.app.state, "cloud", None)
    if cloud is not None:  # a deployment built on another replica: register it here first
        await cloud.deployments.ensure_named(workspace)
    loaded = runtime_of(request).workspaces.revision(workspace, rev)
    if loaded.revision != rev:
        raise NotFound(f"revision {rev} of workspace {workspace!r} is no longer kept")
    path = Path(loaded.path)
    key = (workspace, rev, str(path))
    cached = _TARBALLS.get(key)
    if cached is None:
        data = await asyncio.to_thread(_tarball, path)
        cached = (f'"{hashlib.sha256(data).hexdigest()[:32]}"', data)
        if len(_TARBALLS) > 64:
            _TARBALLS.clear()
        _TARBALLS[key] = cached
    etag, data = cached
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(data, media_type="application/gzip", headers={"ETag": etag})


def worker_routes() -> list[BaseRoute]:
    """The `/worker/*` routes (mounted by `server.app`, outside the OpenAPI document)."""
    return [
        Route("/worker/register", register, methods=["POST"]),
        Route("/worker/heartbeat", heartbeat, methods=["POST"]),
        Route("/worker/claim", claim, methods=["POST"]),
        Route("/worker/leases/{lease}/heartbeat", lease_heartbeat, methods=["POST"]),
        Route("/worker/leases/{lease}/started", started, methods=["POST"]),
        Route("/worker/leases/{lease}/logs", logs, methods=["POST"]),
        Route("/worker/leases/{lease}/result", result, methods=["POST"]),
        Route("/worker/revisions/{workspace}/{revision}", revision, methods=["GET"]),
    ]
