"""Two `partitur serve` replicas on one PostgreSQL, with real worker processes.

- a job executed on replica A runs on a worker attached to replica B, and B serves its
  logs and stream;
- kill -9 the leader (the replica that started first) while a worker dies mid-step: the
  other replica takes over the lease sweeper and fails the step as lost;
- a claim waiting on replica B is woken by a step queued through replica A, and a
  WebSocket on A streams, live, the lines shipped through B while the step still runs;
- a sync webhook on A is answered when its job ends through B (A's orchestrator is woken
  by NOTIFY).
Both end with the invariant checker.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from harness import ServerProcess, run_sync
from invariants import check_invariants
from worker_procs import (
    FIXTURE,
    TOKEN,
    WorkerProcess,
    lines,
    remote_settings,
    step,
    wait_for,
    wait_job,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def _replicas(make_server: Callable[..., ServerProcess], pg_url: str, timeout: float = 1.5
              ) -> tuple[ServerProcess, ServerProcess]:
    settings = remote_settings(timeout=timeout, db={"url": pg_url})
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
            # The step prints 400 ticks 50 ms apart (20 s at rest, more beside a loaded
            # test run).
            frames = asyncio.run(asyncio.wait_for(_stream(
                f"{b.ws_url}/api/jobs/{job_id}/logs/stream?format=events"), 90))
            assert frames[-1] == {"type": "end", "cursor": frames[-1]["cursor"],
                                  "status": "completed"}
            streamed = [f["line"] for f in frames if f["type"] == "log"]
            assert "attempt 1 done" in streamed
            # Replica A, which created the job, sees it completed too.
            assert wait_job(ca, job_id)["status"] == "completed"
            # The same log through both (B inserts its last notes just after the end).
            wait_for(lambda: [x["line"] for x in lines(ca, job_id)]
                     == [x["line"] for x in lines(cb, job_id)], 10, "the same log on A and B")
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
            events = cb.get(f"/api/jobs/{job_id}/events").json()
            # Kill the leader and the worker at once.
            a.kill()
            worker.signal(signal.SIGKILL)
            done = wait_job(cb, job_id, timeout=20)
            assert done["status"] == "failed"
            assert step(done, "tick")["error_kind"] == "worker_lost"
    finally:
        worker.close()
    run_sync(check_invariants(pg_url, acknowledged_jobs=[job_id],
                              acknowledged_events={job_id: events},
                              unique_lines=r"^tick \d+$"))


async def _next_log(ws: Any, until: str) -> list[dict[str, Any]]:
    """Frames read from `ws` up to the log line `until`."""
    frames: list[dict[str, Any]] = []
    while True:
        frame = orjson.loads(await ws.recv())
        frames.append(frame)
        assert frame["type"] != "end", frames
        if frame["type"] == "log" and frame["line"] == until:
            return frames


def test_replica_a_wakes_claims_and_streams_lines_shipped_through_b(
        make_server: Callable[..., ServerProcess], pg_url: str) -> None:
    a, b = _replicas(make_server, pg_url, timeout=60.0)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario() -> str:
        async with httpx.AsyncClient(base_url=a.url, timeout=90) as ca, \
                httpx.AsyncClient(base_url=b.url, timeout=90, headers=auth) as cb:
            worker_id = (await cb.post("/worker/register", json={
                "name": "manual", "concurrency": 1})).json()["worker_id"]
            # A claim long-polls on B (up to a minute) before anything is queued...
            claim = asyncio.ensure_future(cb.post("/worker/claim", json={
                "worker_id": worker_id, "timeout": 60}))
            await asyncio.sleep(0.5)
            assert not claim.done()
            # ...and a step queued through A wakes it (NOTIFY partitur_work), long before
            # its own timeout would have ended it.
            queued_at = time.monotonic()
            job_id: str = (await ca.post("/api/workspaces/w/tasks/slow/execute",
                                         json={})).json()["job_id"]
            r = await asyncio.wait_for(claim, 90)
            assert r.status_code == 200, r.text
            assert time.monotonic() - queued_at < 20
            held = r.json()
            assert held["job_id"] == job_id
            prefix = f"/worker/leases/{held['lease']}"

            async def ship(offset: int, *texts: str) -> None:
                r = await cb.post(f"{prefix}/logs", json={"offset": offset, "lines": [
                    {"ts": time.time(), "stream": "stdout", "line": t} for t in texts]})
                assert r.status_code == 200, r.text

            await ship(0, "one", "two")
            url = f"{a.ws_url}/api/jobs/{job_id}/logs/stream?format=events"
            async with websockets.connect(url) as ws:
                await asyncio.wait_for(_next_log(ws, "two"), 30)  # the backfill
                # Lines shipped through B while the step still runs reach A's stream
                # live: nothing else makes A read the log before the job ends.
                await ship(2, "three")
                live = await asyncio.wait_for(_next_log(ws, "three"), 30)
                assert [f["line"] for f in live if f["type"] == "log"
                        and f["step"] == "tick"] == ["three"]
                detail = (await ca.get(f"/api/jobs/{job_id}")).json()
                assert step(detail, "tick")["status"] == "running"
                await ship(3, "four")
                await asyncio.wait_for(_next_log(ws, "four"), 30)
                r = await cb.post(f"{prefix}/result", json={"status": "completed"})
                assert r.status_code == 200, r.text
                rest = []
                async for message in ws:
                    rest.append(orjson.loads(message))
                assert rest[-1]["type"] == "end" and rest[-1]["status"] == "completed", rest
                assert not [f for f in rest if f["type"] == "log" and f["step"] == "tick"]
            return job_id

    job_id = asyncio.run(asyncio.wait_for(scenario(), 150))
    with httpx.Client(base_url=a.url, timeout=10) as ca:
        stored = [(n, x["line"]) for n, x in enumerate(lines(ca, job_id), 1)
                  if x["step"] == "tick"]
    assert [text for _, text in stored] == ["one", "two", "three", "four"]
    run_sync(check_invariants(pg_url, acknowledged_jobs=[job_id],
                              acknowledged_lines={job_id: stored}))


SYNC_HOOK = """
tasks:
  quick:
    flow:
      only:
        type: shell
        interpreter: sh
        script: |
          echo "ran on a worker"
          echo 'OUTPUT: {"answer": 42}'
triggers:
  ask:
    type: webhook
    task: quick
    mode: sync
    timeout_secs: 60
"""


def test_a_sync_webhook_on_a_is_answered_when_the_job_ends_through_b(
        make_server: Callable[..., ServerProcess], pg_url: str, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "hook.yaml").write_text(SYNC_HOOK, "utf-8")
    settings = remote_settings(timeout=5.0, db={"url": pg_url})
    a = make_server(workspaces={"w": ws}, settings=settings)
    b = make_server(workspaces={"w": ws}, settings=settings)
    worker = WorkerProcess(tmp_path / "worker", b.url)
    try:
        with httpx.Client(base_url=a.url, timeout=120) as ca:
            # A holds the new job in memory and waits for its end; the step is claimed,
            # run and reported through B, which records the end. A's orchestrator hears
            # of it (NOTIFY partitur_events) and answers the hook with the result — not
            # a 202 once its 60 seconds ran out.
            r = ca.post("/hooks/ask", json={})
            assert r.status_code == 200, r.text
            answer = r.json()
            assert answer["status"] == "completed" and answer["output"] == {"only": {"answer": 42}}
            job_id = answer["job_id"]
        with httpx.Client(base_url=b.url, timeout=10) as cb:
            detail = cb.get(f"/api/jobs/{job_id}").json()
            assert step(detail, "only")["worker_id"] not in (None, "", "server")
            assert "ran on a worker" in [x["line"] for x in lines(cb, job_id)]
    finally:
        worker.close()
    run_sync(check_invariants(pg_url, acknowledged_jobs=[job_id]))
