"""Talking to a real `partitur serve` over HTTP: submit jobs, learn when they are done.

"Done" is the moment the submitter is told: a poller lists the jobs still active every
10 ms (`GET /api/jobs?status=pending,running`) and stamps a submitted job the first time
a list asked for after its submission was answered no longer holds it; one list of the
newest jobs at the end gives each its terminal status. Listing only the active jobs keeps
the observer's own load on the server small: a list of the newest 150 jobs costs the
server ~3 ms of CPU, and at one poll per 10 ms that was a quarter of a core taken from
the jobs being measured. Submitter and poller use the lean client of `benchmarks.rawhttp`
(16 keep-alive connections).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.rawhttp import Client

TERMINAL = {"completed", "failed", "cancelled", "skipped"}
ACTIVE = "pending,running"
POLL = 0.01


def client(base: str) -> Client:
    return Client(base)


async def submit(http: Client, task: str, inputs: dict[str, Any] | None = None,
                 workspace: str = "bench") -> str:
    r = await http.post(f"/api/workspaces/{workspace}/tasks/{task}/execute",
                        json={"input": inputs or {}})
    r.raise_for_status()
    return str(r.json()["job_id"])


async def poll_done(http: Client, submitted: dict[str, float],
                    seen: dict[str, tuple[float, str]], finished: Any,
                    timeout: float = 120.0) -> None:
    """Stamp every job of `submitted` (job id → when its submission was answered) the
    first time the list of active jobs, asked for after that, no longer holds it, until
    `finished()` says the caller has what it needs. The status is filled in by
    `final_statuses`."""
    deadline = time.perf_counter() + timeout
    window = 200
    while not finished():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"jobs not done after {timeout}s")
        asked = time.perf_counter()
        waiting = [j for j, at in submitted.items() if at <= asked and j not in seen]
        r = await http.get("/api/jobs", params={"status": ACTIVE, "limit": window})
        r.raise_for_status()
        now = time.perf_counter()
        body = r.json()
        rows = body["items"] if isinstance(body, dict) else body
        if len(rows) >= window:
            window *= 2  # maybe not every active job on the page: ask again for all
            continue
        active = {row["job_id"] for row in rows}
        for job_id in waiting:
            if job_id not in active:
                seen[job_id] = (now, "")
        if not finished():
            await asyncio.sleep(POLL)


async def final_statuses(http: Client, seen: dict[str, tuple[float, str]]) -> None:
    """Fill in the terminal status of each job stamped done (one list of the newest)."""
    r = await http.get("/api/jobs", params={"limit": len(seen) + 50})
    r.raise_for_status()
    body = r.json()
    rows = body["items"] if isinstance(body, dict) else body
    statuses = {row["job_id"]: row["status"] for row in rows}
    for job_id, (at, _) in list(seen.items()):
        status = statuses.get(job_id, "missing")
        if status not in TERMINAL:
            raise RuntimeError(f"job {job_id} was stamped done but is {status}")
        seen[job_id] = (at, status)


async def run_many(http: Client, task: str, count: int,
                   inputs: Any = None) -> tuple[float, list[float], dict[str, str]]:
    """Submit `count` jobs at t0 concurrently; (wall to last done, latencies, statuses).

    The latency of a run is t0 → its done (all are submitted at t0, BENCHMARKS.md W3).
    """
    t0 = time.perf_counter()
    submitted: dict[str, float] = {}
    seen: dict[str, tuple[float, str]] = {}

    async def one(i: int) -> None:
        job_id = await submit(http, task, inputs(i) if callable(inputs) else (inputs or {}))
        submitted[job_id] = time.perf_counter()

    def finished() -> bool:
        return len(submitted) == count and all(j in seen for j in submitted)

    await asyncio.gather(*(one(i) for i in range(count)),
                         poll_done(http, submitted, seen, finished))
    await final_statuses(http, seen)
    ids = list(submitted)
    wall = max(seen[j][0] for j in ids) - t0
    latencies = [seen[j][0] - t0 for j in ids]
    return wall, latencies, {j: seen[j][1] for j in ids}
