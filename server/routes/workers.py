"""`/api/workers` (`/api/users` lives in server.routes.users).

The embedded executor (when the server runs steps itself) is listed first, then the
registered remote workers, newest first. A worker's detail shows its recent steps (up to
50, `limit`/`offset`) and the jobs they belong to.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.errors import NotFound
from engine.store.base import JobFilter
from engine.store.work import Held, WorkerRow
from engine.views import iso, job_summary
from server.errors import ORJSONResponse
from server.openapi import Endpoint, Param
from server.routes import listing, path_param, query_int, runtime_of

RECENT = 50
OFFLINE_AFTER = 2.0
"""A remote worker is `offline` after this many lease timeouts without a heartbeat."""


def _embedded(request: Request) -> list[dict[str, Any]]:
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
        "last_heartbeat": iso(time.time()),
    }]


def _remote(request: Request, row: WorkerRow) -> dict[str, Any]:
    queue = runtime_of(request).queue
    timeout = queue.lease_timeout if queue is not None else 30.0
    alive = time.time() - row.last_heartbeat <= OFFLINE_AFTER * timeout
    return {
        "worker_id": row.worker_id, "name": row.name, "kind": "remote",
        "status": "active" if alive else "offline", "tags": list(row.tags),
        "concurrency": row.concurrency, "started_at": iso(row.registered_at),
        "last_seen_at": iso(row.last_heartbeat), "last_heartbeat": iso(row.last_heartbeat),
    }


def _step(held: Held) -> dict[str, Any]:
    return {"job_id": held.job_id, "step": held.step, "attempt": held.attempt,
            "claimed_at": iso(held.claimed_at),
            "finished_at": None if held.finished_at is None else iso(held.finished_at),
            "outcome": held.outcome or "running"}


async def list_workers(request: Request) -> Response:
    offset = query_int(request, "offset", 0, maximum=2**31)
    limit = query_int(request, "limit", 50)
    embedded = _embedded(request)
    queue = runtime_of(request).queue
    items = embedded[offset:offset + limit]
    total = len(embedded)
    if queue is not None:
        remote_offset = max(0, offset - len(embedded))
        rows, count = await queue.work.workers(limit - len(items), remote_offset)
        items += [_remote(request, row) for row in rows]
        total += count
    return listing(items, total)


async def worker_detail(request: Request) -> Response:
    worker_id = path_param(request, "id")
    limit = min(query_int(request, "limit", RECENT), RECENT)
    offset = query_int(request, "offset", 0, maximum=2**31)
    queue = runtime_of(request).queue
    row = await queue.work.worker(worker_id) if queue is not None else None
    if row is not None and queue is not None:
        recent = await queue.work.recent(worker_id, offset + limit)
        steps = [_step(h) for h in recent[offset:offset + limit]]
        jobs = list(dict.fromkeys(h.job_id for h in recent[offset:offset + limit]))
        return ORJSONResponse({**_remote(request, row), "steps": steps,
                               "jobs": [{"job_id": j} for j in jobs]})
    worker = next((w for w in _embedded(request) if w["worker_id"] == worker_id), None)
    if worker is None:
        raise NotFound(f"worker {worker_id!r} not found")
    store = runtime_of(request).store
    rows, _ = await store.list_jobs(JobFilter(limit=200))
    jobs_out: list[dict[str, Any]] = []
    recent_steps: list[dict[str, Any]] = []
    for job in rows:
        mine = [s for s in await store.get_steps(job.job_id) if s.worker_id == worker_id]
        if mine:
            jobs_out.append(job_summary(job))
            recent_steps += [{"job_id": job.job_id, "step": s.step_name, "attempt": s.attempt,
                              "outcome": s.status} for s in mine]
            if len(jobs_out) >= RECENT:
                break
    return ORJSONResponse({**worker, "jobs": jobs_out[offset:offset + limit],
                           "steps": recent_steps[offset:offset + limit]})


_PAGING = (Param("limit", "Number of entries (default 50)", {"type": "integer", "minimum": 0}),
           Param("offset", "Pagination offset", {"type": "integer", "minimum": 0}))
_WORKER = {"type": "object", "properties": {
    "worker_id": {"type": "string"}, "name": {"type": "string"}, "status": {"type": "string"},
    "tags": {"type": "array", "items": {"type": "string"}}}}

ENDPOINTS = (
    Endpoint("GET", "/api/workers", list_workers, "List workers", (200, 400), query=_PAGING,
             response={"type": "array", "items": _WORKER}, tag="workers"),
    Endpoint("GET", "/api/workers/{id}", worker_detail, "A worker and its recent jobs",
             (200, 400, 404), query=_PAGING, response=_WORKER, tag="workers"),
)
