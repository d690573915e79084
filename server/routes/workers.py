"""`/api/workers` (`/api/users` lives in server.routes.users).

The embedded executor is listed as a worker (remote workers come with the distributed
workers).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.errors import NotFound
from engine.store.base import JobFilter
from engine.views import iso, job_summary
from server.errors import ORJSONResponse
from server.openapi import Endpoint, Param
from server.routes import listing, path_param, query_int, runtime_of

RECENT_JOBS = 50


def _workers(request: Request) -> list[dict[str, Any]]:
    executor = runtime_of(request).executor
    if executor is None:
        return []
    return [{
        "worker_id": executor.worker_id,
        "name": executor.worker_id,
        "kind": "embedded",
        "status": "active",
        "tags": [],
        "concurrency": executor.concurrency,
        "busy": executor.busy,
        "started_at": iso(request.app.state.started_at),
        "last_seen_at": iso(time.time()),
    }]


async def list_workers(request: Request) -> Response:
    items = _workers(request)
    offset = query_int(request, "offset", 0, maximum=2**31)
    limit = query_int(request, "limit", 50)
    return listing(items[offset:offset + limit], len(items))


async def worker_detail(request: Request) -> Response:
    worker_id = path_param(request, "id")
    worker = next((w for w in _workers(request) if w["worker_id"] == worker_id), None)
    if worker is None:
        raise NotFound(f"worker {worker_id!r} not found")
    store = runtime_of(request).store
    rows, _ = await store.list_jobs(JobFilter(limit=200))
    jobs: list[dict[str, Any]] = []
    for row in rows:
        steps = await store.get_steps(row.job_id)
        if any(s.worker_id == worker_id for s in steps):
            jobs.append(job_summary(row))
            if len(jobs) >= RECENT_JOBS:
                break
    return ORJSONResponse({**worker, "jobs": jobs})


_PAGING = (Param("limit", "Number of entries (default 50)", {"type": "integer", "minimum": 0}),
           Param("offset", "Pagination offset", {"type": "integer", "minimum": 0}))
_WORKER = {"type": "object", "properties": {
    "worker_id": {"type": "string"}, "name": {"type": "string"}, "status": {"type": "string"},
    "tags": {"type": "array", "items": {"type": "string"}}}}

ENDPOINTS = (
    Endpoint("GET", "/api/workers", list_workers, "List workers", (200, 400), query=_PAGING,
             response={"type": "array", "items": _WORKER}, tag="workers"),
    Endpoint("GET", "/api/workers/{id}", worker_detail, "A worker and its recent jobs",
             (200, 404), response=_WORKER, tag="workers"),
)
