"""Talking to a real `partitur serve` over HTTP: submit jobs, learn when they are done.

"Done" is the moment the submitter is told: a poller lists the newest jobs every 10 ms
(`GET /api/jobs?limit=…`) and stamps each job the first time it shows a terminal status.
Submitter and poller use the lean client of `benchmarks.rawhttp` (16 keep-alive
connections).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.rawhttp import Client

TERMINAL = {"completed", "failed", "cancelled", "skipped"}
POLL = 0.01


def client(base: str) -> Client:
    return Client(base)


async def submit(http: Client, task: str, inputs: dict[str, Any] | None = None,
                 workspace: str = "bench") -> str:
    r = await http.post(f"/api/workspaces/{workspace}/tasks/{task}/execute",
                        json={"input": inputs or {}})
    r.raise_for_status()
    return str(r.json()["job_id"])


async def poll_done(http: Client, seen: dict[str, tuple[float, str]],
                    finished: Any, window: int, timeout: float = 120.0) -> None:
    """Stamp every job of the newest `window` the first time it shows a terminal status,
    until `finished()` says the caller has what it needs."""
    deadline = time.perf_counter() + timeout
    while not finished():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"jobs not done after {timeout}s")
        r = await http.get("/api/jobs", params={"limit": window})
        r.raise_for_status()
        now = time.perf_counter()
        body = r.json()
        rows = body["items"] if isinstance(body, dict) else body
        for row in rows:
            if row["status"] in TERMINAL and row["job_id"] not in seen:
                seen[row["job_id"]] = (now, row["status"])
        if not finished():
            await asyncio.sleep(POLL)


async def run_many(http: Client, task: str, count: int,
                   inputs: Any = None) -> tuple[float, list[float], dict[str, str]]:
    """Submit `count` jobs at t0 concurrently; (wall to last done, latencies, statuses).

    The latency of a run is t0 → its done (all are submitted at t0, BENCHMARKS.md W3).
    """
    t0 = time.perf_counter()
    ids: list[str] = []
    seen: dict[str, tuple[float, str]] = {}

    async def one(i: int) -> None:
        ids.append(await submit(http, task, inputs(i) if callable(inputs) else (inputs or {})))

    def finished() -> bool:
        return len(ids) == count and all(j in seen for j in ids)

    await asyncio.gather(*(one(i) for i in range(count)),
                         poll_done(http, seen, finished, count + 50))
    wall = max(seen[j][0] for j in ids) - t0
    latencies = [seen[j][0] - t0 for j in ids]
    return wall, latencies, {j: seen[j][1] for j in ids}
