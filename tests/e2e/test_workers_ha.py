"""Two `partitur serve` replicas on one PostgreSQL, with real worker processes.

- a job executed on replica A runs on a worker attached to replica B, and B serves its
  logs and stream;
- kill -9 the leader (the replica that started first) while a worker dies mid-step: the
  other replica takes over the lease sweeper and fails the step as lost.
Both end with the invariant checker.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
import websockets
from harness import ServerProcess, run_sync
from invariants import check_invariants
from worker_procs import FIXTURE, WorkerProcess, lines, remote_settings, step, wait_for, wait_job

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def _replicas(make_server: Callable[..., ServerProcess], pg_url: str
              ) -> tuple[ServerProcess, ServerProcess]:
    settings = remote_settings(timeout=1.5, db={"url": pg_url})
    a = make_server(workspaces={"w": FIXTURE}, settings=settings)
    b = make_server(workspaces={"w": FIXTURE}, settings=settings)
    return a, b


async def _stream(url: str) -> list[dict[str, object]]:
    frames = []
    async with websockets.connect(url) as ws:
        async for message in ws:
            frames.append(orjson.loads(message))
    return frames


def test_any_replica_serves_a_job_run_through_another(
        make_server: Callable[..., ServerProcess], pg_url: str, tmp_path: Path) -> None:
    a, b = _replicas(make_server, pg_url)
    worker = WorkerProcess(tmp_path / "w", b.url)
    try:
        with httpx.Client(base_url=a.url, timeout=10) as ca, \
                httpx.Client(base_url=b.url, timeout=10) as cb:
            job_id = ca.post("/api/workspaces/w/tasks/slow-rerun/execute",
                             json={}).json()["job_id"]
            # A WebSocket on replica B streams lines the worker shipped through B while
            # the job was created on A; it ends when the job does.
            wait_for(lambda: any(x["line"].startswith("tick") for x in lines(cb, job_id)),
                     20, "ticks on B")
            frames = asyncio.run(asyncio.wait_for(_stream(
                f"{b.ws_url}/api/jobs/{job_id}/logs/stream?format=events"), 40))
            assert frames[-1] == {"type": "end", "cursor": frames[-1]["cursor"],
                                  "status": "completed"}
            streamed = [f["line"] for f in frames if f["type"] == "log"]
            assert "attempt 1 done" in streamed
            # Replica A, which created the job, sees it completed too.
            assert wait_job(ca, job_id)["status"] == "completed"
            assert [x["line"] for x in lines(ca, job_id)] == [x["line"] for x in lines(cb, job_id)]
    finally:
        worker.close()
    run_sync(check_invariants(pg_url, acknowledged_jobs=[job_id], unique_lines=r"^tick \d+$"))


def test_leader_killed_the_other_replica_sweeps_lost_leases(
        make_server: Callable[..., ServerProcess], pg_url: str, tmp_path: Path) -> None:
    a, b = _replicas(make_server, pg_url)  # a started first: it leads
    worker = WorkerProcess(tmp_path / "w", b.url)
    try:
        with httpx.Client(base_url=b.url, timeout=10) as cb:
            job_id = cb.post("/api/workspaces/w/tasks/slow/execute", json={}).json()["job_id"]
            wait_for(lambda: sum(x["line"].startswith("tick") for x in lines(cb, job_id)) > 3,
                     20, "ticks")
            # Kill the leader and the worker at once.
            a.kill()
            worker.signal(signal.SIGKILL)
            done = wait_job(cb, job_id, timeout=20)
            assert done["status"] == "failed"
            assert step(done, "tick")["error_kind"] == "worker_lost"
    finally:
        worker.close()
    run_sync(check_invariants(pg_url, acknowledged_jobs=[job_id], unique_lines=r"^tick \d+$"))
