"""A log batch sent again after a server crash, or to another replica, is stored once.

The worker's side is driven over HTTP with the lease token, as `engine/worker.py` does:
a batch is stored, the server is killed with SIGKILL before the worker could have read
the reply, and the worker sends the same batch again — to the restarted server (SQLite,
JSONL logs) or to another replica (PostgreSQL). Each line must be in the job's log once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from harness import ServerProcess, run_sync
from invariants import check_invariants
from worker_procs import FIXTURE, TOKEN, lines, remote_settings, wait_job

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _batch(offset: int, *texts: str) -> dict[str, Any]:
    return {"offset": offset, "lines": [{"ts": time.time(), "stream": "stdout", "line": t}
                                        for t in texts]}


async def _claim(url: str) -> tuple[str, str]:
    """Queue a `slow` job through `url` and claim its step there: (job id, lease)."""
    async with httpx.AsyncClient(base_url=url, timeout=90, headers=AUTH) as c:
        worker_id = (await c.post("/worker/register", json={
            "name": "manual", "concurrency": 1})).json()["worker_id"]
        job_id: str = (await c.post("/api/workspaces/w/tasks/slow/execute",
                                    json={})).json()["job_id"]
        r = await c.post("/worker/claim", json={"worker_id": worker_id, "timeout": 60})
        assert r.status_code == 200, r.text
        held = r.json()
        assert held["job_id"] == job_id
        r = await c.post(f"/worker/leases/{held['lease']}/started", json={"pid": None})
        assert r.status_code == 200, r.text
        return job_id, str(held["lease"])


async def _post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST like the worker does: retried until the server answers (it may be starting)."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=AUTH) as c:
        while True:
            try:
                r = await c.post(path, json=body)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
            assert r.status_code == 200, r.text
            answer: dict[str, Any] = r.json()
            return answer


def _tick_lines(url: str, job_id: str) -> list[tuple[int, str]]:
    with httpx.Client(base_url=url, timeout=10) as c:
        done = wait_job(c, job_id, timeout=60)
        assert done["status"] == "completed", done
        return [(n, x["line"]) for n, x in enumerate(lines(c, job_id), 1)
                if x["step"] == "tick"]


def test_a_batch_resent_to_the_restarted_server_is_stored_once(
        make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings(timeout=60.0))

    async def scenario() -> str:
        job_id, lease = await _claim(server.url)
        prefix = f"/worker/leases/{lease}"
        assert (await _post(server.url, f"{prefix}/logs", _batch(0, "one", "two")))["next"] == 2
        server.kill()  # the reply may never have reached the worker...
        server.start()
        # ...so it sends the same batch again, then one overlapping it, then the rest.
        assert (await _post(server.url, f"{prefix}/logs", _batch(0, "one", "two")))["next"] == 2
        assert (await _post(server.url, f"{prefix}/logs",
                            _batch(1, "two", "three")))["next"] == 3
        server.kill()
        server.start()
        assert (await _post(server.url, f"{prefix}/logs",
                            _batch(1, "two", "three", "four")))["next"] == 4
        await _post(server.url, f"{prefix}/result", {"status": "completed"})
        return job_id

    job_id = asyncio.run(asyncio.wait_for(scenario(), 240))
    stored = _tick_lines(server.url, job_id)
    assert [text for _, text in stored] == ["one", "two", "three", "four"]
    run_sync(check_invariants(f"sqlite:///{server.tmp_dir / 'partitur.db'}",
                              logs_dir=server.tmp_dir / "logs", acknowledged_jobs=[job_id],
                              acknowledged_lines={job_id: stored}))


def test_a_batch_resent_to_another_replica_is_stored_once(
        make_server: Callable[..., ServerProcess], pg_url: str) -> None:
    settings = remote_settings(timeout=60.0, db={"url": pg_url})
    a = make_server(workspaces={"w": FIXTURE}, settings=settings)
    b = make_server(workspaces={"w": FIXTURE}, settings=settings)

    async def scenario() -> str:
        job_id, lease = await _claim(a.url)
        prefix = f"/worker/leases/{lease}"
        assert (await _post(a.url, f"{prefix}/logs", _batch(0, "one", "two")))["next"] == 2
        a.kill()  # the load balancer sends the retry to the other replica
        assert (await _post(b.url, f"{prefix}/logs", _batch(0, "one", "two")))["next"] == 2
        # Both replicas get the next batch (a retry after a timeout that did land).
        a.start()
        for url in (b.url, a.url, b.url):
            assert (await _post(url, f"{prefix}/logs",
                                _batch(1, "two", "three", "four")))["next"] == 4
        await _post(a.url, f"{prefix}/result", {"status": "completed"})
        return job_id

    job_id = asyncio.run(asyncio.wait_for(scenario(), 240))
    stored = _tick_lines(b.url, job_id)
    assert [text for _, text in stored] == ["one", "two", "three", "four"]
    run_sync(check_invariants(pg_url, acknowledged_jobs=[job_id],
                              acknowledged_lines={job_id: stored}))
